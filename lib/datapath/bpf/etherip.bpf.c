// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* EtherIP (RFC 3378) encapsulation and decapsulation on TC (clsact, cls_bpf direct action).
 *
 * etherip_encap: TC ingress of "eip-<tunnel>", the peer of the veth end that is a bridge port.
 *   Prepends outer Ethernet + IPv4/IPv6 + 0x3000 and redirects the packet into the ingress of
 *   that same device, so the kernel routes it (routing and neighbour tables) and fragments it
 *   when it exceeds the underlay MTU (DF clear, as the BSDs send).
 * etherip_decap: TC ingress of each underlay interface. Accepts protocol 97 from configured
 *   peers only, reassembles outer fragments (TC ingress runs before IP reassembly), strips the
 *   outer headers and redirects the inner frame out of "eip-<tunnel>", i.e. into the bridge.
 *
 * Only helpers available in Linux 6.1 are used. Headers are read with bpf_skb_load_bytes()
 * so nonlinear skbs work too. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "etherip_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Maps are pinned by the loader (lib/datapath/datapath.cpp), not by libbpf: it pins once a
 * tunnel exists, under a per-namespace directory. */

#define AF_INET 2
#define AF_INET6 10
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define IPPROTO_FRAGMENT_HDR 44

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u32);
  __type(value, struct etherip_tunnel);
} tunnels SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, struct etherip_peer_key);
  __type(value, __u32);
} peers SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, struct etherip_addr_key);
  __type(value, __u32);
} locals SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, 1025);
  __type(key, __u32);
  __type(value, struct etherip_stats);
} stats SEC(".maps");

/* A datagram under reassembly. The buffer is twice the datagram limit so that the verifier
 * can bound "offset < MAX" and "length <= MAX" separately. */
struct frag_key {
  __u32 family;
  __u32 id;
  __u8 src[16];
  __u8 dst[16];
};

#define FRAG_BLOCKS (ETHERIP_FRAG_MAX / 8)
struct frag_entry {
  __u64 first_ns;
  __u32 total;    /* datagram payload length, known once the last fragment arrived */
  __u32 received; /* payload bytes received */
  __u64 blocks[FRAG_BLOCKS / 64]; /* 8-byte blocks received, to detect overlaps */
  __u8 buf[2 * ETHERIP_FRAG_MAX];
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 256);
  __type(key, struct frag_key);
  __type(value, struct frag_entry);
} frags SEC(".maps");

/* Never written: the zeroed template for new `frags` entries (too big for the stack). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct frag_entry);
} frag_zero SEC(".maps");

/* Scratch for the copy path of short frames (see decap_whole). */
struct scratch {
  __u8 buf[2 * ETHERIP_FRAG_MAX];
};
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct scratch);
} scratch SEC(".maps");

struct outer4 {
  struct ethhdr eth;
  struct iphdr ip;
  __be16 etherip;
} __attribute__((packed));

struct outer6 {
  struct ethhdr eth;
  struct ipv6hdr ip;
  __be16 etherip;
} __attribute__((packed));

struct frag6_hdr {
  __u8 nexthdr;
  __u8 reserved;
  __be16 frag_off; /* offset in 8-byte units << 3 | M flag */
  __be32 id;
};

/* Hides a value from the compiler so that a bounds check it considers redundant stays in the
 * code for the verifier, which tracks ranges less precisely. */
#define OPAQUE(x) asm volatile("" : "+r"(x))

/* Sizes passed to helpers must be provably in [1, max]. The 6.1 verifier does not raise a lower
 * bound on "!= 0", so a size is formed as (len - 1) bounded above, plus one; the second OPAQUE
 * keeps clang from computing the sum before the check. Runs `fail` when len is not in [1, max]. */
#define BOUNDED_SIZE(var, len, max, fail) \
  __u32 var = (len) - 1;                  \
  OPAQUE(var);                            \
  if (var >= (max)) fail;                 \
  OPAQUE(var);                            \
  var += 1

static __always_inline struct etherip_stats *stats_of(__u32 key) {
  return bpf_map_lookup_elem(&stats, &key);
}

static __always_inline int drop(__u32 key, enum etherip_drop reason) {
  struct etherip_stats *s = stats_of(key);
  if (s && reason < ETHERIP_DROP_MAX) s->drops[reason]++;
  return TC_ACT_SHOT;
}

static __always_inline __u16 csum_fold(__u32 sum) {
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return (__u16)~sum;
}

/* ---------------------------------------------------------------- encapsulation */

struct tcp_fixed {
  __be16 source, dest;
  __be32 seq, ack_seq;
  __u8 doff_res; /* data offset in the high nibble */
  __u8 flags;
  __be16 window, check, urg_ptr;
};
#define TCP_FLAG_SYN 0x02

/* Lowers the MSS option of a TCP SYN (or SYN-ACK) in the inner frame so that full segments of
 * the new connection fit the underlay unfragmented: fragmentation and BPF reassembly cost about
 * half the throughput. The frame starts at offset 0 with an untagged Ethernet header. */
static __always_inline void clamp_mss(struct __sk_buff *skb, struct etherip_tunnel *t,
                                      __u32 tag_len) {
  struct ethhdr eth;
  if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth))) return;
  __u32 l4, overhead = (t->family == ETHERIP_FAMILY_V4 ? 20 : 40) + 2 + ETH_HLEN + tag_len;
  if (eth.h_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip))) return;
    if (ip.protocol != IPPROTO_TCP || (ip.frag_off & bpf_htons(IP_OFFSET))) return;
    l4 = ETH_HLEN + ip.ihl * 4;
    overhead += 20 + 20;
  } else if (eth.h_proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr ip;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip))) return;
    if (ip.nexthdr != IPPROTO_TCP) return;
    l4 = ETH_HLEN + sizeof(ip);
    overhead += 40 + 20;
  } else {
    return;
  }
  struct tcp_fixed tcp;
  if (bpf_skb_load_bytes(skb, l4, &tcp, sizeof(tcp))) return;
  if (!(tcp.flags & TCP_FLAG_SYN)) return;
  __u32 optlen = (tcp.doff_res >> 4) * 4;
  if (optlen <= sizeof(tcp) || t->clamp_mtu <= overhead) return;
  optlen -= sizeof(tcp);
  /* Options are read from the packet: 6.1 rejects variable-offset reads of the stack. */
  __u32 base = l4 + sizeof(tcp), off = 0;
  int found = 0;
#pragma unroll
  for (int i = 0; i < 10 && !found; i++) { /* walk at most ten options */
    __u8 kl[2];
    if (off + 4 > optlen || bpf_skb_load_bytes(skb, base + off, kl, sizeof(kl))) return;
    if (kl[0] == 0) return; /* end of options */
    if (kl[0] == 1) {       /* no-op padding */
      off++;
      continue;
    }
    if (kl[0] == 2 && kl[1] == 4) {
      found = 1; /* MSS */
    } else {
      if (kl[1] < 2) return;
      off += kl[1];
    }
  }
  if (!found) return;
  __be16 old_mss;
  if (bpf_skb_load_bytes(skb, base + off + 2, &old_mss, sizeof(old_mss))) return;
  __u16 mss = bpf_ntohs(old_mss);
  __u16 clamp = t->clamp_mtu - overhead;
  if (mss <= clamp) return;
  __be16 new_mss = bpf_htons(clamp);
  __u32 at = base + off + 2;
  if (bpf_skb_store_bytes(skb, at, &new_mss, sizeof(new_mss), 0)) return;
  bpf_l4_csum_replace(skb, l4 + 16, old_mss, new_mss, sizeof(new_mss));
}

/* Sends an IPv6 EtherIP packet as two fragments (a full 1518-byte frame needs two on a
 * 1280-byte path). The skb holds sizeof(outer6) bytes of room, then the inner frame. Both
 * fragments enter the stack through eip's ingress like any encapsulated packet: the first as
 * a clone, the second as the skb itself. */
static __always_inline int encap6_fragments(struct __sk_buff *skb, struct etherip_tunnel *t,
                                            __u32 key, struct outer6 *h, __u32 inner_len,
                                            __u32 mtu) {
  const __u32 hdr = sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + sizeof(struct frag6_hdr);
  __u32 len = inner_len + 2;                                     /* fragmentable part */
  __u32 first = (mtu - sizeof(struct ipv6hdr) - sizeof(struct frag6_hdr)) & ~7U;
  if (mtu < 1280 || mtu > 65535 || len <= first || len > 2 * first)
    return drop(key, ETHERIP_DROP_FRAG_OVERSIZE);
  __u32 zero = 0;
  struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
  if (!sc) return drop(key, ETHERIP_DROP_HELPER);
  /* Room for the fragment header: [eth][ip6][frag][0x3000][inner frame]. */
  if (bpf_skb_change_head(skb, sizeof(struct frag6_hdr), 0))
    return drop(key, ETHERIP_DROP_HELPER);
  if (bpf_skb_store_bytes(skb, hdr, &h->etherip, 2, 0)) return drop(key, ETHERIP_DROP_HELPER);
  BOUNDED_SIZE(rest, len - first, ETHERIP_FRAG_MAX, return drop(key, ETHERIP_DROP_HELPER));
  if (bpf_skb_load_bytes(skb, hdr + first, sc->buf, rest)) return drop(key, ETHERIP_DROP_HELPER);

  struct frag6_hdr fh = {.nexthdr = ETHERIP_IPPROTO};
  fh.id = bpf_htonl(__sync_fetch_and_add(&t->ip_id, 1));
  h->ip.nexthdr = IPPROTO_FRAGMENT_HDR;
  h->ip.payload_len = bpf_htons(sizeof(fh) + first);
  fh.frag_off = bpf_htons(1); /* offset 0, more fragments */
  if (bpf_skb_store_bytes(skb, 0, h, sizeof(struct ethhdr) + sizeof(struct ipv6hdr), 0) ||
      bpf_skb_store_bytes(skb, hdr - sizeof(fh), &fh, sizeof(fh), 0) ||
      bpf_skb_change_tail(skb, hdr + first, 0))
    return drop(key, ETHERIP_DROP_HELPER);
  skb->mark = ETHERIP_MARK;
  if (bpf_clone_redirect(skb, key, BPF_F_INGRESS)) return drop(key, ETHERIP_DROP_HELPER);

  /* The second fragment: the saved tail behind the same headers. The kernel refuses to trim
   * an skb below its transport header, which the sender's stack may have set deep into the
   * inner frame (an inner IPv4 TCP/UDP/ICMP packet: 64 + 14 + 20 bytes from here on). Then the
   * skb keeps its length: the IPv6 payload length says where the fragment ends, and the stack
   * that receives it (through eip's ingress) trims the rest before it is sent. */
  h->ip.payload_len = bpf_htons(sizeof(fh) + rest);
  fh.frag_off = bpf_htons(first); /* offset in bytes = offset in 8-byte units << 3 */
  bpf_skb_change_tail(skb, hdr + rest, 0);
  if (bpf_skb_store_bytes(skb, hdr, sc->buf, rest, 0) ||
      bpf_skb_store_bytes(skb, 0, h, sizeof(struct ethhdr) + sizeof(struct ipv6hdr), 0) ||
      bpf_skb_store_bytes(skb, hdr - sizeof(fh), &fh, sizeof(fh), 0))
    return drop(key, ETHERIP_DROP_HELPER);
  struct etherip_stats *s = stats_of(key);
  if (s) {
    s->tx_packets++;
    s->tx_bytes += inner_len;
  }
  skb->mark = ETHERIP_MARK;
  return bpf_redirect(key, BPF_F_INGRESS);
}

SEC("tc")
int etherip_encap(struct __sk_buff *skb) {
  /* Our own outer packet coming back through the device's ingress: hand it to the stack,
   * without the mark so that policy routing by fwmark is not disturbed. */
  if (skb->mark == ETHERIP_MARK) {
    skb->mark = 0;
    return TC_ACT_OK;
  }
  __u32 key = skb->ifindex;
  struct etherip_tunnel *t = bpf_map_lookup_elem(&tunnels, &key);
  if (!t) return drop(ETHERIP_UNATTRIBUTED, ETHERIP_DROP_NO_TUNNEL);
  /* There is no GSO handler for protocol 97: a GSO skb would be segmented as TCP after we
   * put our headers in front. The bridge-port end has segmentation offloads turned off. */
  if (skb->gso_size) return drop(key, ETHERIP_DROP_GSO);

  /* The receive path moved the frame's outer 802.1Q/802.1ad tag into skb metadata before TC
   * ingress; take it (and a second one that popping moves up, for QinQ) back into the frame. */
  __be16 tags[4] = {};
  __u32 ntags = 0;
  if (skb->vlan_present) {
    tags[0] = (__be16)skb->vlan_proto;
    tags[1] = bpf_htons((__u16)skb->vlan_tci);
    ntags = 1;
    if (bpf_skb_vlan_pop(skb)) return drop(key, ETHERIP_DROP_HELPER);
    if (skb->vlan_present) {
      tags[2] = (__be16)skb->vlan_proto;
      tags[3] = bpf_htons((__u16)skb->vlan_tci);
      ntags = 2;
      if (bpf_skb_vlan_pop(skb)) return drop(key, ETHERIP_DROP_HELPER);
    }
  }
  __u32 tag_len = ntags * 4;
  if (t->clamp_mtu) clamp_mss(skb, t, tag_len);
  __u32 inner_len = skb->len + tag_len;
  __u32 hdr_len = t->family == ETHERIP_FAMILY_V4 ? sizeof(struct outer4) : sizeof(struct outer6);
  /* change_head, not adjust_room: adjust_room refuses non-IP frames (ARP, ...). */
  if (bpf_skb_change_head(skb, hdr_len + tag_len, 0)) return drop(key, ETHERIP_DROP_HELPER);
  if (ntags) {
    /* [hdr][tags gap][dst src][type...] -> [hdr][dst src][tags][type...] */
    __u8 macs[12];
    if (bpf_skb_load_bytes(skb, hdr_len + tag_len, macs, sizeof(macs)) ||
        bpf_skb_store_bytes(skb, hdr_len, macs, sizeof(macs), 0))
      return drop(key, ETHERIP_DROP_HELPER);
    if (ntags == 1 ? bpf_skb_store_bytes(skb, hdr_len + 12, tags, 4, 0)
                   : bpf_skb_store_bytes(skb, hdr_len + 12, tags, 8, 0))
      return drop(key, ETHERIP_DROP_HELPER);
  }

  if (t->family == ETHERIP_FAMILY_V4) {
    struct iphdr ip = {};
    ip.version = 4;
    ip.ihl = 5;
    ip.tot_len = bpf_htons(sizeof(struct iphdr) + 2 + inner_len);
    /* Unique per packet so that the peer never mixes fragments of different datagrams. */
    ip.id = bpf_htons((__u16)__sync_fetch_and_add(&t->ip_id, 1));
    ip.frag_off = 0; /* DF clear: oversized packets get fragmented, as RFC 3378 peers do */
    ip.ttl = 64;
    ip.protocol = ETHERIP_IPPROTO;
    __builtin_memcpy(&ip.saddr, t->local, 4);
    __builtin_memcpy(&ip.daddr, t->remote, 4);
    __u16 *w = (__u16 *)&ip;
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < (int)sizeof(struct iphdr) / 2; i++) sum += w[i];
    ip.check = csum_fold(sum);
    struct outer4 h = {};
    __builtin_memcpy(h.eth.h_dest, t->mac, ETH_ALEN);
    __builtin_memcpy(h.eth.h_source, t->mac, ETH_ALEN);
    h.eth.h_proto = bpf_htons(ETH_P_IP);
    h.ip = ip;
    h.etherip = bpf_htons(ETHERIP_HDR_V3);
    if (bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0)) return drop(key, ETHERIP_DROP_HELPER);
  } else {
    struct outer6 h = {};
    __builtin_memcpy(h.eth.h_dest, t->mac, ETH_ALEN);
    __builtin_memcpy(h.eth.h_source, t->mac, ETH_ALEN);
    h.eth.h_proto = bpf_htons(ETH_P_IPV6);
    h.ip.version = 6;
    h.ip.payload_len = bpf_htons(2 + inner_len);
    h.ip.nexthdr = ETHERIP_IPPROTO;
    h.ip.hop_limit = 64;
    __builtin_memcpy(&h.ip.saddr, t->local, 16);
    __builtin_memcpy(&h.ip.daddr, t->remote, 16);
    h.etherip = bpf_htons(ETHERIP_HDR_V3);
    /* IPv6 routers never fragment: when the route MTU is too small, we are the source that
     * must (the stack would answer its own packet with Packet Too Big). */
    struct bpf_fib_lookup fib = {};
    fib.family = AF_INET6;
    fib.l4_protocol = ETHERIP_IPPROTO;
    fib.tot_len = sizeof(struct ipv6hdr) + 2 + inner_len;
    fib.ifindex = key;
    __builtin_memcpy(fib.ipv6_src, t->local, 16);
    __builtin_memcpy(fib.ipv6_dst, t->remote, 16);
    if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) == BPF_FIB_LKUP_RET_FRAG_NEEDED)
      return encap6_fragments(skb, t, key, &h, inner_len, fib.mtu_result);
    if (bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0)) return drop(key, ETHERIP_DROP_HELPER);
  }

  struct etherip_stats *s = stats_of(key);
  if (s) {
    s->tx_packets++;
    s->tx_bytes += inner_len;
  }

  /* Fast path (opt-in): when the route's MTU fits and the neighbour is known, send straight out
   * of the underlay. It skips a second pass through the stack, and with it netfilter and IPsec
   * policies, hence opt-in. Only when skb->protocol already names the outer family, as
   * nothing here can rewrite it. */
  if ((t->flags & ETHERIP_FLAG_FAST_PATH) && t->family == ETHERIP_FAMILY_V4 &&
      skb->protocol == bpf_htons(ETH_P_IP)) {
    struct bpf_fib_lookup fib = {};
    fib.family = AF_INET;
    fib.l4_protocol = ETHERIP_IPPROTO;
    fib.tot_len = sizeof(struct iphdr) + 2 + inner_len;
    fib.ifindex = key; /* routed as if received on eip, as the slow path is */
    __builtin_memcpy(&fib.ipv4_src, t->local, 4);
    __builtin_memcpy(&fib.ipv4_dst, t->remote, 4);
    if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) == BPF_FIB_LKUP_RET_SUCCESS) {
      __u8 macs[12];
      __builtin_memcpy(macs, fib.dmac, 6);
      __builtin_memcpy(macs + 6, fib.smac, 6);
      if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0) == 0)
        return bpf_redirect(fib.ifindex, 0);
    }
  }
  /* Slow path: into the stack through eip's own ingress; it routes and fragments. */
  skb->mark = ETHERIP_MARK;
  return bpf_redirect(key, BPF_F_INGRESS);
}

/* ---------------------------------------------------------------- decapsulation */

static __always_inline int version_ok(struct etherip_tunnel *t, __u32 key, __be16 h) {
  if (h == bpf_htons(ETHERIP_HDR_V3)) return 1;
  if (h == bpf_htons(ETHERIP_HDR_REVERSED)) {
    if (t->flags & ETHERIP_FLAG_ACCEPT_REVERSED) return 1;
    drop(key, ETHERIP_DROP_REVERSED);
    return 0;
  }
  drop(key, ETHERIP_DROP_BAD_VERSION);
  return 0;
}

static __always_inline int deliver(struct etherip_tunnel *t, __u32 key, __u32 len) {
  struct etherip_stats *s = stats_of(key);
  if (s) {
    s->rx_packets++;
    s->rx_bytes += len;
  }
  /* Out of the eip end: the frame arrives at its veth peer, the bridge port. */
  return bpf_redirect(t->eip_ifindex, 0);
}

/* Sets the frame length to len, zero-padded to the Ethernet minimum as a NIC would deliver it:
 * a forwarded skb keeps its transport header offset, below which the kernel refuses to trim
 * (34 bytes behind IPv4, 54 behind IPv6), and a short frame could not be delivered otherwise. */
static __always_inline int fix_tail(struct __sk_buff *skb, __u32 len) {
  __u32 want = len < ETH_ZLEN ? ETH_ZLEN : len;
  if (skb->len < want && bpf_skb_change_tail(skb, want, 0)) return -1;
  if (len < ETH_ZLEN) {
    __u32 zero = 0;
    struct frag_entry *z = bpf_map_lookup_elem(&frag_zero, &zero);
    if (!z) return -1;
    BOUNDED_SIZE(pad, ETH_ZLEN - len, ETH_ZLEN, return -1);
    if (bpf_skb_store_bytes(skb, len, z->buf, pad, BPF_F_RECOMPUTE_CSUM)) return -1;
  }
  if (skb->len > want && bpf_skb_change_tail(skb, want, 0)) return -1;
  return 0;
}

/* Replaces the packet with len bytes from buf (a map value). Bytes from offset 14 on are
 * covered by a CHECKSUM_COMPLETE skb->csum at TC ingress, so they are stored with
 * BPF_F_RECOMPUTE_CSUM; the MAC header is not. change_tail keeps the checksum too. */
static __always_inline int emit(struct __sk_buff *skb, __u8 *buf, __u32 len) {
  if (len < ETH_HLEN || len > ETHERIP_FRAG_MAX) return -1;
  if (skb->len < len && bpf_skb_change_tail(skb, len, 0)) return -1;
  if (bpf_skb_store_bytes(skb, 0, buf, ETH_HLEN, 0)) return -1;
  if (len > ETH_HLEN) {
    BOUNDED_SIZE(rest, len - ETH_HLEN, ETHERIP_FRAG_MAX, return -1);
    if (bpf_skb_store_bytes(skb, ETH_HLEN, buf + ETH_HLEN, rest, BPF_F_RECOMPUTE_CSUM)) return -1;
  }
  return fix_tail(skb, len);
}

/* An unfragmented EtherIP payload of plen bytes (EtherIP header included) at offset off. */
static __always_inline int decap_whole(struct __sk_buff *skb, struct etherip_tunnel *t,
                                       __u32 key, __u32 off, __u32 plen) {
  if (plen < 2 + ETH_HLEN) return drop(key, ETHERIP_DROP_TRUNCATED);
  __be16 h;
  if (bpf_skb_load_bytes(skb, off, &h, sizeof(h))) return drop(key, ETHERIP_DROP_TRUNCATED);
  if (!version_ok(t, key, h)) return TC_ACT_SHOT;
  __u32 inner = plen - 2;

  /* Fast path: move the inner Ethernet header over the outer one, then let adjust_room remove
   * the outer IP + EtherIP headers and the now redundant inner Ethernet header right behind
   * the MAC header (it keeps a CHECKSUM_COMPLETE csum right). */
  struct ethhdr ie;
  if (bpf_skb_load_bytes(skb, off + 2, &ie, sizeof(ie))) return drop(key, ETHERIP_DROP_TRUNCATED);
  __u32 cut = off + 2; /* outer headers before the inner frame, outer Ethernet included */
  if (bpf_skb_store_bytes(skb, 0, &ie, sizeof(ie), 0) == 0 &&
      bpf_skb_adjust_room(skb, -(__s32)cut, BPF_ADJ_ROOM_MAC, 0) == 0) {
    /* Ethernet padding of a short outer packet is not part of the inner frame. */
    if ((skb->len > inner || inner < ETH_ZLEN) && fix_tail(skb, inner))
      return drop(key, ETHERIP_DROP_HELPER);
    return deliver(t, key, inner);
  }

  /* adjust_room refuses results shorter than an IP header (for example ARP inside IPv6), so
   * short frames are copied. The outer Ethernet header may already hold the inner one. */
  __u32 zero = 0;
  struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
  if (!sc) return drop(key, ETHERIP_DROP_HELPER);
  BOUNDED_SIZE(n, inner, ETHERIP_FRAG_MAX, return drop(key, ETHERIP_DROP_HELPER));
  if (bpf_skb_load_bytes(skb, off + 2, sc->buf, n)) return drop(key, ETHERIP_DROP_TRUNCATED);
  if (emit(skb, sc->buf, inner)) return drop(key, ETHERIP_DROP_HELPER);
  return deliver(t, key, inner);
}

static __always_inline __u64 block_mask(__u32 first, __u32 last, __u32 word) {
  __u32 lo = word * 64, hi = lo + 63;
  if (last < lo || first > hi) return 0;
  __u32 a = first > lo ? first : lo;
  __u32 b = last < hi ? last : hi;
  __u32 n = b - a + 1;
  __u64 bits = n >= 64 ? ~0ULL : ((1ULL << n) - 1);
  return bits << (a - lo);
}

/* One fragment: payload of plen bytes at skb offset off, belonging at datagram offset foff.
 * Datagrams are kept in an LRU map until complete (Calico keeps IPv4 fragments the same way). */
static __always_inline int reassemble(struct __sk_buff *skb, struct etherip_tunnel *t,
                                      __u32 key, struct frag_key *fk, __u32 off, __u32 plen,
                                      __u32 foff, int more) {
  if (plen == 0 || (more && (plen & 7))) return drop(key, ETHERIP_DROP_FRAG_MALFORMED);
  if (plen > ETHERIP_FRAG_MAX || foff >= ETHERIP_FRAG_MAX || foff + plen > ETHERIP_FRAG_MAX) {
    bpf_map_delete_elem(&frags, fk);
    return drop(key, ETHERIP_DROP_FRAG_OVERSIZE);
  }
  __u64 now = bpf_ktime_get_ns();
  struct frag_entry *e = bpf_map_lookup_elem(&frags, fk);
  if (e && now - e->first_ns > ETHERIP_FRAG_TIMEOUT_NS) {
    /* The stale datagram is dropped; this piece starts a new one. */
    bpf_map_delete_elem(&frags, fk);
    drop(key, ETHERIP_DROP_FRAG_TIMEOUT);
    e = 0;
  }
  if (!e) {
    __u32 zero = 0;
    struct frag_entry *z = bpf_map_lookup_elem(&frag_zero, &zero);
    if (!z || bpf_map_update_elem(&frags, fk, z, BPF_ANY)) return drop(key, ETHERIP_DROP_HELPER);
    e = bpf_map_lookup_elem(&frags, fk);
    if (!e) return drop(key, ETHERIP_DROP_HELPER);
    e->first_ns = now;
  }

  __u32 end = foff + plen;
  __u32 first = foff / 8, last = (end - 1) / 8;
  __u64 m0 = block_mask(first, last, 0), m1 = block_mask(first, last, 1);
  __u64 m2 = block_mask(first, last, 2), m3 = block_mask(first, last, 3);
  int bad = 0;
  if ((e->blocks[0] & m0) | (e->blocks[1] & m1) | (e->blocks[2] & m2) | (e->blocks[3] & m3)) {
    bad = ETHERIP_DROP_FRAG_OVERLAP;
  } else if (e->total && end > e->total) {
    bad = ETHERIP_DROP_FRAG_MALFORMED;
  } else if (!more) {
    if (e->total) {
      bad = ETHERIP_DROP_FRAG_OVERLAP;
    } else {
      /* Nothing may have arrived beyond the end that this last fragment declares. */
      __u64 beyond = block_mask(last + 1, FRAG_BLOCKS - 1, 0) & e->blocks[0];
      beyond |= block_mask(last + 1, FRAG_BLOCKS - 1, 1) & e->blocks[1];
      beyond |= block_mask(last + 1, FRAG_BLOCKS - 1, 2) & e->blocks[2];
      beyond |= block_mask(last + 1, FRAG_BLOCKS - 1, 3) & e->blocks[3];
      if (beyond)
        bad = ETHERIP_DROP_FRAG_MALFORMED;
      else
        e->total = end;
    }
  }
  if (bad) {
    bpf_map_delete_elem(&frags, fk);
    return drop(key, bad);
  }

  OPAQUE(foff);
  if (foff >= ETHERIP_FRAG_MAX) return TC_ACT_SHOT;
  BOUNDED_SIZE(n, plen, ETHERIP_FRAG_MAX, return TC_ACT_SHOT);
  if (bpf_skb_load_bytes(skb, off, e->buf + foff, n)) {
    bpf_map_delete_elem(&frags, fk);
    return drop(key, ETHERIP_DROP_TRUNCATED);
  }
  e->blocks[0] |= m0;
  e->blocks[1] |= m1;
  e->blocks[2] |= m2;
  e->blocks[3] |= m3;
  e->received += plen;
  struct etherip_stats *s = stats_of(key);
  if (s) s->rx_fragments++;
  /* Held: not a drop, the datagram is still incomplete. */
  if (!e->total || e->received != e->total) return TC_ACT_STOLEN;

  __u32 total = e->total;
  if (total < 2 + ETH_HLEN || total > ETHERIP_FRAG_MAX) {
    bpf_map_delete_elem(&frags, fk);
    return drop(key, ETHERIP_DROP_TRUNCATED);
  }
  __be16 h = *(__be16 *)e->buf;
  if (!version_ok(t, key, h)) {
    bpf_map_delete_elem(&frags, fk);
    return TC_ACT_SHOT;
  }
  int err = emit(skb, e->buf + 2, total - 2);
  bpf_map_delete_elem(&frags, fk);
  if (err) return drop(key, ETHERIP_DROP_HELPER);
  if (s) s->reassembled++;
  return deliver(t, key, total - 2);
}

/* EtherIP that matches no tunnel: to a tunnel's local address from a stranger, or to another
 * address of this host, is dropped; transit EtherIP (forwarded by this host) passes. */
static __always_inline int not_a_peer(struct __sk_buff *skb, __u32 family, const __u8 *src,
                                      const __u8 *dst) {
  struct etherip_addr_key ak = {.family = family};
  __builtin_memcpy(ak.addr, dst, 16);
  __u32 *owner = bpf_map_lookup_elem(&locals, &ak);
  if (owner) return drop(*owner, ETHERIP_DROP_UNKNOWN_PEER);

  struct bpf_fib_lookup fib = {};
  fib.ifindex = skb->ifindex; /* the underlay this program is attached to */
  if (family == ETHERIP_FAMILY_V4) {
    fib.family = AF_INET;
    __builtin_memcpy(&fib.ipv4_src, src, 4);
    __builtin_memcpy(&fib.ipv4_dst, dst, 4);
  } else {
    fib.family = AF_INET6;
    __builtin_memcpy(fib.ipv6_src, src, 16);
    __builtin_memcpy(fib.ipv6_dst, dst, 16);
  }
  /* Local destinations give NOT_FWDED. Without forwarding on the underlay (FWD_DISABLED) the
   * stack could only deliver it locally, where nothing handles protocol 97, or drop it. */
  long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
  if (rc == BPF_FIB_LKUP_RET_NOT_FWDED || rc == BPF_FIB_LKUP_RET_FWD_DISABLED)
    return drop(ETHERIP_UNATTRIBUTED, ETHERIP_DROP_WRONG_LOCAL);
  return TC_ACT_UNSPEC;
}

static __always_inline int decap4(struct __sk_buff *skb) {
  struct iphdr ip;
  if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip))) return TC_ACT_UNSPEC;
  if (ip.version != 4 || ip.protocol != ETHERIP_IPPROTO) return TC_ACT_UNSPEC;

  struct etherip_peer_key pk = {.family = ETHERIP_FAMILY_V4};
  __builtin_memcpy(pk.local, &ip.daddr, 4);
  __builtin_memcpy(pk.remote, &ip.saddr, 4);
  __u32 *kp = bpf_map_lookup_elem(&peers, &pk);
  if (!kp) return not_a_peer(skb, ETHERIP_FAMILY_V4, pk.remote, pk.local);
  __u32 key = *kp;
  struct etherip_tunnel *t = bpf_map_lookup_elem(&tunnels, &key);
  if (!t) return drop(ETHERIP_UNATTRIBUTED, ETHERIP_DROP_NO_TUNNEL);

  __u32 ihl = ip.ihl * 4;
  if (ihl < sizeof(struct iphdr)) return drop(key, ETHERIP_DROP_BAD_IP_HEADER);
  __u32 tot = bpf_ntohs(ip.tot_len);
  if (tot < ihl || tot > skb->len - ETH_HLEN) return drop(key, ETHERIP_DROP_TRUNCATED);
  __u16 hb[30] = {};
  if (bpf_skb_load_bytes(skb, ETH_HLEN, hb, ihl)) return drop(key, ETHERIP_DROP_TRUNCATED);
  __u32 sum = 0;
#pragma unroll
  for (int i = 0; i < 30; i++) sum += hb[i]; /* zero beyond ihl */
  if (csum_fold(sum) != 0) return drop(key, ETHERIP_DROP_BAD_IP_HEADER);

  __u32 off = ETH_HLEN + ihl;
  __u32 plen = tot - ihl;
  __u16 frag = bpf_ntohs(ip.frag_off);
  if (frag & (IP_MF | IP_OFFSET)) {
    struct frag_key fk = {.family = ETHERIP_FAMILY_V4, .id = bpf_ntohs(ip.id)};
    __builtin_memcpy(fk.src, &ip.saddr, 4);
    __builtin_memcpy(fk.dst, &ip.daddr, 4);
    return reassemble(skb, t, key, &fk, off, plen, (frag & IP_OFFSET) * 8, frag & IP_MF);
  }
  return decap_whole(skb, t, key, off, plen);
}

static __always_inline int decap6(struct __sk_buff *skb) {
  struct ipv6hdr ip;
  if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip))) return TC_ACT_UNSPEC;
  if (ip.version != 6) return TC_ACT_UNSPEC;
  struct frag6_hdr fh = {};
  int fragmented = 0;
  if (ip.nexthdr == IPPROTO_FRAGMENT_HDR) {
    if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(ip), &fh, sizeof(fh))) return TC_ACT_UNSPEC;
    if (fh.nexthdr != ETHERIP_IPPROTO) return TC_ACT_UNSPEC;
    fragmented = 1;
  } else if (ip.nexthdr != ETHERIP_IPPROTO) {
    return TC_ACT_UNSPEC; /* other extension headers in front of EtherIP are not parsed */
  }

  struct etherip_peer_key pk = {.family = ETHERIP_FAMILY_V6};
  __builtin_memcpy(pk.local, &ip.daddr, 16);
  __builtin_memcpy(pk.remote, &ip.saddr, 16);
  __u32 *kp = bpf_map_lookup_elem(&peers, &pk);
  if (!kp) return not_a_peer(skb, ETHERIP_FAMILY_V6, pk.remote, pk.local);
  __u32 key = *kp;
  struct etherip_tunnel *t = bpf_map_lookup_elem(&tunnels, &key);
  if (!t) return drop(ETHERIP_UNATTRIBUTED, ETHERIP_DROP_NO_TUNNEL);

  __u32 plen = bpf_ntohs(ip.payload_len);
  if (plen > skb->len - ETH_HLEN - sizeof(ip)) return drop(key, ETHERIP_DROP_TRUNCATED);
  __u32 off = ETH_HLEN + sizeof(ip);
  if (!fragmented) return decap_whole(skb, t, key, off, plen);

  if (plen < sizeof(fh)) return drop(key, ETHERIP_DROP_TRUNCATED);
  __u16 fo = bpf_ntohs(fh.frag_off);
  /* An atomic fragment (offset 0, no more fragments) is a whole datagram (RFC 6946). */
  if ((fo & ~7) == 0 && !(fo & 1)) return decap_whole(skb, t, key, off + sizeof(fh), plen - 8);
  struct frag_key fk = {.family = ETHERIP_FAMILY_V6, .id = fh.id};
  __builtin_memcpy(fk.src, &ip.saddr, 16);
  __builtin_memcpy(fk.dst, &ip.daddr, 16);
  return reassemble(skb, t, key, &fk, off + sizeof(fh), plen - sizeof(fh), fo & ~7, fo & 1);
}

SEC("tc")
int etherip_decap(struct __sk_buff *skb) {
  /* A tagged outer packet belongs to a VLAN device, which has its own hook. */
  if (skb->vlan_present) return TC_ACT_UNSPEC;
  /* TC_ACT_UNSPEC for everything that is not ours: the packet continues untouched, and so
   * does classification by any other filter on this hook (TC_ACT_OK would end it). */
  if (skb->protocol == bpf_htons(ETH_P_IP)) return decap4(skb);
  if (skb->protocol == bpf_htons(ETH_P_IPV6)) return decap6(skb);
  return TC_ACT_UNSPEC;
}
