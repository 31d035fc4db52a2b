/* Types shared by the EtherIP BPF programs and their C++ loader. Plain UAPI types only: this
 * header is compiled both with clang -target bpf and with the host C++ compiler. */
#ifndef ETHERCTL_ETHERIP_COMMON_H
#define ETHERCTL_ETHERIP_COMMON_H

#include <linux/types.h>

#define ETHERIP_IPPROTO 97
/* RFC 3378 header: version 3 in the high nibble, 12 reserved bits zero. */
#define ETHERIP_HDR_V3 0x3000
/* Old FreeBSD/NetBSD put the version in the low nibble; accepted only on opt-in. */
#define ETHERIP_HDR_REVERSED 0x0300

/* Set on an encapsulated packet redirected into the stack through its own device, so the
 * encap program recognises it on re-entry (and clears it before the stack sees it). */
#define ETHERIP_MARK 0x45495000u

#define ETHERIP_FAMILY_V4 4
#define ETHERIP_FAMILY_V6 6

#define ETHERIP_FLAG_ACCEPT_REVERSED (1u << 0)
/* Encapsulated IPv4 packets that fit the route MTU bypass the stack (bpf_fib_lookup). */
#define ETHERIP_FLAG_FAST_PATH (1u << 1)
/* IPsec: EtherIP is accepted only when it was decrypted by an SA of the tunnel's reqid from its
 * peer; ESP from the peer is sent through the tunnel's ESP veth pair to be decrypted. */
#define ETHERIP_FLAG_IPSEC (1u << 2)

/* Largest outer payload (EtherIP header + inner frame) that is reassembled, and that the IPv6
 * send path fragments: the frame of a 9216-byte tunnel MTU with two VLAN tags (9216 + 14 + 8)
 * plus the 2-byte header. Bigger datagrams are dropped as oversize. */
#define ETHERIP_FRAG_MAX 9240
/* Largest ESP payload (behind the outer IPv4 header) that is reassembled: an EtherIP datagram of
 * ETHERIP_FRAG_MAX bytes in tunnel mode (inner IPv4 header, 20) plus the largest ESP overhead
 * (header 8, IV 16, padding 15, trailer 2, ICV 32), rounded up to 8 bytes. */
#define ETHERIP_ESP_MAX (ETHERIP_FRAG_MAX + 96)
/* The IPv6 send path cuts at most this many fragments: ETHERIP_FRAG_MAX bytes in pieces of
 * 1232 bytes, what the IPv6 minimum MTU (1280) leaves after the fixed and fragment headers. */
#define ETHERIP_FRAG6_MAX_PIECES ((ETHERIP_FRAG_MAX + 1231) / 1232)
/* Incomplete datagrams older than this are dropped (counted when their next piece arrives). */
#define ETHERIP_FRAG_TIMEOUT_NS (5ULL * 1000 * 1000 * 1000)

#define ETHERIP_MAX_UNDERLAY 8
#define ETHERIP_NAME_LEN 16

/* Stats slot for drops that belong to no tunnel (unknown local address, missing config). */
#define ETHERIP_UNATTRIBUTED 0

enum etherip_drop {
  ETHERIP_DROP_TRUNCATED = 0,  /* outer or inner shorter than its headers or lengths claim */
  ETHERIP_DROP_BAD_IP_HEADER,  /* outer IP header malformed (IHL, checksum) */
  ETHERIP_DROP_BAD_VERSION,    /* EtherIP header other than 0x3000 */
  ETHERIP_DROP_REVERSED,       /* 0x0300 without the accept_reversed opt-in */
  ETHERIP_DROP_UNKNOWN_PEER,   /* to a tunnel's local address from a source that is no peer */
  ETHERIP_DROP_WRONG_LOCAL,    /* to another local address of this host */
  ETHERIP_DROP_FRAG_OVERLAP,   /* overlapping or duplicate fragment: whole datagram dropped */
  ETHERIP_DROP_FRAG_TIMEOUT,   /* datagram incomplete after ETHERIP_FRAG_TIMEOUT_NS (counted
                                  when it is found: its next piece, or its slot is needed) */
  ETHERIP_DROP_FRAG_OVERSIZE,  /* datagram longer than ETHERIP_FRAG_MAX */
  ETHERIP_DROP_FRAG_MALFORMED, /* empty or misaligned piece, data past the last fragment */
  ETHERIP_DROP_NO_TUNNEL,      /* program attached to a device without configuration */
  ETHERIP_DROP_GSO,            /* GSO packet reached the encap program (offloads left on) */
  ETHERIP_DROP_HELPER,         /* a resize/copy/redirect helper failed */
  ETHERIP_DROP_FRAG_EVICTED,   /* incomplete datagram pushed out of a full reassembly table */
  ETHERIP_DROP_PLAINTEXT,      /* EtherIP of an IPsec tunnel that no SA of the tunnel decrypted:
                                  clear text, even from the peer's address */
  ETHERIP_DROP_ESP_NO_SA,      /* ESP from the peer that came back from the ESP veth pair still
                                  encrypted: no SA for its SPI (one just deleted, none yet) */
  ETHERIP_DROP_MAX,
};

/* Value of the `tunnels` map; key: ifindex of the program-carrying veth end ("eip-<name>"). */
struct etherip_tunnel {
  char name[ETHERIP_NAME_LEN]; /* tunnel (bridge-port) name, for the loader */
  __u32 eip_ifindex;
  __u32 family; /* ETHERIP_FAMILY_V4 / _V6 */
  __u32 flags;  /* ETHERIP_FLAG_* */
  __u32 ip_id;  /* next outer IPv4 identification; incremented atomically by encap */
  __u8 local[16];
  __u8 remote[16];
  __u8 mac[6];     /* eip end's own MAC: outer destination so its ingress accepts the packet */
  __u16 clamp_mtu; /* underlay MTU that TCP SYNs' MSS is clamped to fit, 0: no clamping */
  __u32 underlay[ETHERIP_MAX_UNDERLAY]; /* ifindexes carrying the decap program (0 = unused) */
  /* IPsec (ETHERIP_FLAG_IPSEC), else zero: */
  __u32 reqid;       /* the SAs' reqid */
  __u32 esp_ifindex; /* "esp-<name>": ESP from the peer is sent out of it, to be decrypted */
  __u32 dec_ifindex; /* "dec-<name>", its peer: GRO decrypts, decap runs on its ingress */
  __u8 dec_mac[6];   /* dec-<name>'s MAC: destination of the ESP packets sent to it */
  __u16 esp_headroom; /* bytes for ESP already taken off clamp_mtu (read back by the loader) */
};

/* Key of `peers` (decap's tunnel lookup): addresses as seen on receive. IPv4 in the first 4
 * bytes, the rest zero. */
struct etherip_peer_key {
  __u32 family;
  __u8 local[16];
  __u8 remote[16];
};

/* Key of `locals`: a tunnel's local address, to attribute unknown-peer drops. */
struct etherip_addr_key {
  __u32 family;
  __u8 addr[16];
};

/* Value of the per-CPU `stats` map; key: tunnel key (eip ifindex) or ETHERIP_UNATTRIBUTED. */
struct etherip_stats {
  __u64 rx_packets; /* frames decapsulated and handed to the bridge */
  __u64 rx_bytes;   /* their inner frame bytes */
  __u64 tx_packets; /* frames encapsulated */
  __u64 tx_bytes;   /* their inner frame bytes */
  __u64 rx_fragments;
  __u64 reassembled; /* datagrams completed from fragments */
  __u64 drops[ETHERIP_DROP_MAX];
};

#endif
