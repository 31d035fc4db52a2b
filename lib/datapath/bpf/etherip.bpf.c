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

/* Reassembly of outer fragments.
 *
 * Fragments of one datagram can be processed at the same moment on different CPUs (RSS or RPS
 * spreading, several underlay queues, senders pinned to CPUs), so the table must be safe under
 * concurrency: no datagram lost because two of its pieces raced, none delivered twice, none
 * delivered with bytes of another datagram. The design:
 *
 * - An ARRAY of FRAG_BUCKETS buckets, each a bpf_spin_lock and FRAG_WAYS slots; a datagram
 *   (tunnel, IP id) belongs to one bucket (hash), so every CPU handling one of its pieces
 *   takes the same lock and finds or creates the same slot: two racing first pieces cannot
 *   create two partial datagrams. bpf_spin_lock works in ARRAY and HASH values but not in
 *   LRU_HASH ones (EOPNOTSUPP on 6.1 and 6.18 alike), and an array's memory is never freed or
 *   recycled behind our back: hash and LRU elements are reused at once after a delete or an
 *   eviction (no RCU grace period), so a CPU still copying into one could write into another
 *   datagram. Slots are recycled only by this code, under the lock.
 * - The lock is held only for bookkeeping (find/claim a slot, check and mark the 8-byte blocks
 *   a piece covers, count): no helper may be called while holding it (the verifier refuses),
 *   and it disables interrupts, so a softirq cannot spin on a lock its own CPU holds. The copy
 *   into the slot's buffer happens outside the lock, under a reference (`writers`): a slot
 *   with writers is never recycled, and the blocks a writer marked are its alone (overlapping
 *   pieces are refused before they copy anything).
 * - `received` counts bytes whose copy finished; the CPU that makes it equal to the datagram's
 *   length (known from the last piece) moves the slot to DONE under the lock: exactly one CPU
 *   delivers, after every copy. It then frees the slot.
 * Rejected alternatives: lock-free bitmaps (__sync_fetch_and_or) with a per-entry generation in
 * a hash/LRU map detect a recycled entry only after writing into it; a CAS "assembler" flag
 * makes a CPU that finds it taken either spin without the interrupt protection of
 * bpf_spin_lock or drop its piece.
 * Capacity: FRAG_BUCKETS * FRAG_WAYS datagrams under reassembly. A piece of a new datagram that
 * finds its bucket full pushes out the oldest incomplete datagram nobody is copying into
 * (counted: frag_timeout when it was older than ETHERIP_FRAG_TIMEOUT_NS, else frag_evicted). */
#define FRAG_BUCKET_BITS 6
#define FRAG_BUCKETS (1 << FRAG_BUCKET_BITS)
#define FRAG_WAYS 4
#define FRAG_WORDS ((ETHERIP_FRAG_MAX / 8 + 63) / 64) /* bitmap words: one bit per 8 bytes */
/* Pieces are copied in chunks so that "offset < MAX" and "chunk <= FRAG_CHUNK" bound every
 * write for the verifier: the buffer needs FRAG_CHUNK bytes of slack, not another MAX. */
#define FRAG_CHUNK 512
#define FRAG_CHUNKS ((ETHERIP_FRAG_MAX + FRAG_CHUNK - 1) / FRAG_CHUNK)

enum frag_state {
  FRAG_FREE = 0,
  FRAG_OPEN, /* collecting pieces */
  FRAG_DONE, /* complete: one CPU is delivering it */
  FRAG_DEAD, /* dropped while writers were copying: free once the last one leaves */
};

struct frag_slot {
  __u64 ident;    /* tunnel key << 32 | IP identification */
  __u64 first_ns; /* arrival of the first piece */
  __u32 total;    /* datagram payload length, known once the last piece arrived; 0 before */
  __u32 received; /* payload bytes copied into the buffer */
  __u32 writers;  /* CPUs copying into or delivering from the buffer right now */
  __u32 state;    /* enum frag_state */
  __u64 blocks[FRAG_WORDS]; /* 8-byte blocks claimed by pieces, to refuse overlaps */
};

struct frag_bucket {
  struct bpf_spin_lock lock;
  __u32 pad;
  struct frag_slot slot[FRAG_WAYS];
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FRAG_BUCKETS);
  __type(key, __u32);
  __type(value, struct frag_bucket);
} frag_buckets SEC(".maps");

/* Payload of slot `way` of bucket `b`: entry b * FRAG_WAYS + way. */
struct frag_buf {
  __u8 data[ETHERIP_FRAG_MAX + FRAG_CHUNK];
};
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FRAG_BUCKETS *FRAG_WAYS);
  __type(key, __u32);
  __type(value, struct frag_buf);
} frag_bufs SEC(".maps");

/* Never written: zero bytes for padding short frames. */
struct zeroes {
  __u8 bytes[ETH_ZLEN];
};
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct zeroes);
} zeroes SEC(".maps");

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
  __u32 var = (__u32)(len);               \
  var -= 1;                               \
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

/* Sends an IPv6 EtherIP packet as fragments of the route MTU: up to ETHERIP_FRAG6_MAX_PIECES
 * (8) of them, enough for ETHERIP_FRAG_MAX bytes on a 1280-byte path. The skb holds
 * sizeof(outer6) bytes of room, then the inner frame. The fragmentable part (EtherIP header and
 * frame) is saved to the per-CPU scratch buffer; each fragment is then cut from it behind the
 * same headers and enters the stack through eip's ingress like any encapsulated packet: all
 * but the last as clones, the last as the skb itself. */
static __always_inline int encap6_fragments(struct __sk_buff *skb, struct etherip_tunnel *t,
                                            __u32 key, struct outer6 *h, __u32 inner_len,
                                            __u32 mtu) {
  const __u32 hdr = sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + sizeof(struct frag6_hdr);
  __u32 len = inner_len + 2; /* fragmentable part */
  if (mtu < 1280 || mtu > 65535 || len > ETHERIP_FRAG_MAX)
    return drop(key, ETHERIP_DROP_FRAG_OVERSIZE);
  __u32 per = (mtu - sizeof(struct ipv6hdr) - sizeof(struct frag6_hdr)) & ~7U; /* >= 1232 */
  __u32 zero = 0;
  struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
  if (!sc) return drop(key, ETHERIP_DROP_HELPER);
  /* Room for the fragment header: [eth][ip6][frag][0x3000][inner frame]. */
  if (bpf_skb_change_head(skb, sizeof(struct frag6_hdr), 0)) return drop(key, ETHERIP_DROP_HELPER);
  if (bpf_skb_store_bytes(skb, hdr, &h->etherip, 2, 0)) return drop(key, ETHERIP_DROP_HELPER);
  BOUNDED_SIZE(all, len, ETHERIP_FRAG_MAX, return drop(key, ETHERIP_DROP_HELPER));
  if (bpf_skb_load_bytes(skb, hdr, sc->buf, all)) return drop(key, ETHERIP_DROP_HELPER);

  struct frag6_hdr fh = {.nexthdr = ETHERIP_IPPROTO};
  fh.id = bpf_htonl(__sync_fetch_and_add(&t->ip_id, 1));
  h->ip.nexthdr = IPPROTO_FRAGMENT_HDR;
  __u32 at = 0;
  for (int i = 0; i < ETHERIP_FRAG6_MAX_PIECES; i++) {
    OPAQUE(at);
    if (at >= ETHERIP_FRAG_MAX || at >= len) break;
    __u32 left = len - at;
    int more = left > per;
    BOUNDED_SIZE(size, more ? per : left, ETHERIP_FRAG_MAX, break);
    h->ip.payload_len = bpf_htons(sizeof(fh) + size);
    fh.frag_off = bpf_htons(at | (more ? 1 : 0)); /* offset in 8-byte units << 3, M flag */
    /* The first piece is in place already; later ones come from the saved copy. The kernel
     * refuses to trim an skb below its transport header, which the sender's stack may have set
     * deep into the inner frame (an inner IPv4 TCP/UDP/ICMP packet: 64 + 14 + 20 bytes into the
     * skb), so a short last piece may keep a longer skb: the IPv6 payload length says where the
     * fragment ends, and the stack that receives it (through eip's ingress) trims the rest
     * before it is sent. */
    if ((bpf_skb_change_tail(skb, hdr + size, 0) && skb->len < hdr + size) ||
        (at && bpf_skb_store_bytes(skb, hdr, sc->buf + at, size, 0)) ||
        bpf_skb_store_bytes(skb, 0, h, sizeof(struct ethhdr) + sizeof(struct ipv6hdr), 0) ||
        bpf_skb_store_bytes(skb, hdr - sizeof(fh), &fh, sizeof(fh), 0))
      return drop(key, ETHERIP_DROP_HELPER);
    skb->mark = ETHERIP_MARK;
    if (!more) {
      struct etherip_stats *s = stats_of(key);
      if (s) {
        s->tx_packets++;
        s->tx_bytes += inner_len;
      }
      return bpf_redirect(key, BPF_F_INGRESS);
    }
    if (bpf_clone_redirect(skb, key, BPF_F_INGRESS)) return drop(key, ETHERIP_DROP_HELPER);
    at += size;
  }
  return drop(key, ETHERIP_DROP_HELPER); /* not reached: the pieces cover len */
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
    struct zeroes *z = bpf_map_lookup_elem(&zeroes, &zero);
    if (!z) return -1;
    BOUNDED_SIZE(pad, ETH_ZLEN - len, ETH_ZLEN, return -1);
    if (bpf_skb_store_bytes(skb, len, z->bytes, pad, BPF_F_RECOMPUTE_CSUM)) return -1;
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
static __always_inline int decap_whole(struct __sk_buff *skb, struct etherip_tunnel *t, __u32 key,
                                       __u32 off, __u32 plen) {
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

/* Bitmap arithmetic without branches: each branch in a loop over FRAG_WORDS words multiplies
 * the paths the verifier walks (with branches, frag_claim exceeded its million instructions). The
 * OPAQUEs keep clang from turning the arithmetic back into comparisons. */

/* x clamped to [0, 64]. */
static __always_inline __u64 clamp64(__s64 x) {
  __s64 sign = x >> 63;
  OPAQUE(sign);
  x &= ~sign; /* negative: 0 */
  __s64 over = 64 - x;
  __s64 over_sign = over >> 63;
  OPAQUE(over_sign);
  x += over & over_sign; /* above 64: 64 */
  return (__u64)x;
}

/* Bits 0..n-1 set, n in [0, 64] (two shifts: a shift by 64 is undefined). */
static __always_inline __u64 low_bits(__u64 n) {
  __u64 half = n >> 1;
  return ~((~0ULL << half) << (n - half));
}

/* Bits of bitmap word `word` that cover 8-byte blocks first..last (none when last < first). */
static __always_inline __u64 block_mask(__u32 first, __u32 last, __u32 word) {
  __s64 lo = (__s64)word * 64;
  __u64 from = clamp64((__s64)first - lo), to = clamp64((__s64)last + 1 - lo);
  return low_bits(to) & ~low_bits(from);
}

#define SLOT(bk, way) (&(bk)->slot[(way) & (FRAG_WAYS - 1)])

/* `now` was read before taking the lock, so another CPU may have opened the slot later than
 * that: signed, or such a fresh datagram would look billions of years old. */
static __always_inline int expired(const struct frag_slot *s, __u64 now) {
  return (__s64)(now - s->first_ns) > (__s64)ETHERIP_FRAG_TIMEOUT_NS;
}

/* A slot whose datagram is dropped or delivered: free now, or once its last writer leaves. */
static __always_inline void retire(struct frag_slot *s) {
  s->state = s->writers ? FRAG_DEAD : FRAG_FREE;
}

static __always_inline struct frag_bucket *bucket_of(__u64 ident, __u32 *b) {
  *b = (__u32)((ident * 0x9E3779B97F4A7C15ULL) >> (64 - FRAG_BUCKET_BITS));
  return bpf_map_lookup_elem(&frag_buckets, b);
}

/* The reassembly steps are global (not inlined) functions: the verifier checks each once on its
 * own, with arguments as unknown scalars, rather than once per caller and caller state, which
 * keeps the decap program within its budget on 6.1 (inlined, the 19-word bitmap and 19-chunk
 * copy loops exceeded the million instructions). BPF functions take at most five arguments.
 *
 * Step 1, under the bucket lock: finds the datagram's slot or opens one, checks the piece
 * (datagram offset foff, plen bytes, more: not the last piece) against the blocks claimed so
 * far, claims its blocks and takes a writer reference. Returns the slot (0..FRAG_WAYS-1), or -1
 * when the piece is refused (counted). */
__noinline int frag_claim(__u64 ident, __u32 foff, __u32 plen, __u32 more, __u64 now) {
  __u32 key = (__u32)(ident >> 32), b;
  struct frag_bucket *bk = bucket_of(ident, &b);
  if (!bk) {
    drop(key, ETHERIP_DROP_HELPER);
    return -1;
  }
  int oversize =
      plen > ETHERIP_FRAG_MAX || foff >= ETHERIP_FRAG_MAX || foff + plen > ETHERIP_FRAG_MAX;
  __u32 end = foff + plen, first = foff / 8, last = (end - 1) / 8;

  /* Under the lock: no helper calls. Drops are counted after unlocking. */
  int bad = 0, stale = 0, evicted = 0;
  __u32 victim = 0, way = FRAG_WAYS;
  bpf_spin_lock(&bk->lock);
  for (__u32 i = 0; i < FRAG_WAYS; i++)
    if (bk->slot[i].state == FRAG_OPEN && bk->slot[i].ident == ident) way = i;
  if (way < FRAG_WAYS && expired(SLOT(bk, way), now)) {
    /* The stale datagram is dropped; this piece starts a new one. */
    retire(SLOT(bk, way));
    stale = 1;
    way = FRAG_WAYS;
  }
  if (oversize) {
    if (way < FRAG_WAYS) retire(SLOT(bk, way));
    bad = ETHERIP_DROP_FRAG_OVERSIZE;
    goto unlock;
  }
  if (way >= FRAG_WAYS) {
    /* A free slot, else the oldest incomplete datagram that nobody is copying into. */
    __u32 oldest = FRAG_WAYS;
    for (__u32 i = 0; i < FRAG_WAYS; i++) {
      struct frag_slot *c = &bk->slot[i];
      if (c->state == FRAG_FREE) {
        if (way >= FRAG_WAYS) way = i;
      } else if (c->state == FRAG_OPEN && c->writers == 0 &&
                 (oldest >= FRAG_WAYS || c->first_ns < SLOT(bk, oldest)->first_ns)) {
        oldest = i;
      }
    }
    if (way >= FRAG_WAYS && oldest < FRAG_WAYS) {
      way = oldest;
      victim = (__u32)(SLOT(bk, way)->ident >> 32);
      evicted = expired(SLOT(bk, way), now) ? ETHERIP_DROP_FRAG_TIMEOUT : ETHERIP_DROP_FRAG_EVICTED;
    }
    if (way >= FRAG_WAYS) {
      bad = ETHERIP_DROP_FRAG_EVICTED; /* every slot busy: no room for this datagram */
      goto unlock;
    }
    struct frag_slot *n = SLOT(bk, way);
    n->ident = ident;
    n->first_ns = now;
    n->total = 0;
    n->received = 0;
    n->writers = 0;
    n->state = FRAG_OPEN;
    for (__u32 w = 0; w < FRAG_WORDS; w++) n->blocks[w] = 0;
  }
  {
    struct frag_slot *s = SLOT(bk, way);
    __u64 overlap = 0, beyond = 0;
    for (__u32 w = 0; w < FRAG_WORDS; w++) {
      overlap |= s->blocks[w] & block_mask(first, last, w);
      beyond |= s->blocks[w] & block_mask(last + 1, FRAG_WORDS * 64 - 1, w);
    }
    if (overlap)
      bad = ETHERIP_DROP_FRAG_OVERLAP;
    else if (s->total && end > s->total)
      bad = ETHERIP_DROP_FRAG_MALFORMED;
    else if (!more && s->total)
      bad = ETHERIP_DROP_FRAG_OVERLAP; /* a second last piece */
    else if (!more && beyond)
      bad = ETHERIP_DROP_FRAG_MALFORMED; /* pieces beyond the end this one declares */
    if (bad) {
      retire(s);
      goto unlock;
    }
    if (!more) s->total = end;
    for (__u32 w = 0; w < FRAG_WORDS; w++) s->blocks[w] |= block_mask(first, last, w);
    s->writers++;
  }
unlock:
  bpf_spin_unlock(&bk->lock);
  if (stale) drop(key, ETHERIP_DROP_FRAG_TIMEOUT);
  if (evicted) drop(victim, evicted);
  if (bad) {
    drop(key, bad);
    return -1;
  }
  return way & (FRAG_WAYS - 1);
}

/* Step 2, without the lock: copies the piece (plen bytes at skb offset off) to datagram offset
 * foff in buffer idx; the claimed blocks are this writer's alone. Returns 1 when copied. */
__noinline int frag_copy(struct __sk_buff *skb, __u32 idx, __u32 off, __u32 foff, __u32 plen) {
  struct frag_buf *buf = bpf_map_lookup_elem(&frag_bufs, &idx);
  if (!skb || !buf) return 0;
  __u32 done = 0;
  for (int i = 0; i < FRAG_CHUNKS && done < plen; i++) {
    __u32 pos = foff + done, left = plen - done;
    OPAQUE(pos);
    if (pos >= ETHERIP_FRAG_MAX) return 0;
    BOUNDED_SIZE(n, left > FRAG_CHUNK ? FRAG_CHUNK : left, FRAG_CHUNK, return 0);
    if (bpf_skb_load_bytes(skb, off + done, buf->data + pos, n)) return 0;
    done += n;
  }
  return done == plen;
}

/* Step 3, under the lock: drops the writer reference of slot `way` and counts the piece's plen
 * bytes when it was copied. Returns the datagram's length when this piece completed it: the
 * slot is then DONE and this CPU holds a reference to deliver it. Else 0. */
__noinline int frag_written(__u64 ident, __u32 way, __u32 plen, __u32 copied) {
  __u32 b, total = 0;
  struct frag_bucket *bk = bucket_of(ident, &b);
  if (!bk) return 0;
  bpf_spin_lock(&bk->lock);
  struct frag_slot *s = SLOT(bk, way);
  s->writers--;
  if (s->state == FRAG_OPEN && !copied) {
    retire(s);
  } else if (s->state == FRAG_OPEN) {
    s->received += plen;
    if (s->total && s->received == s->total) {
      s->state = FRAG_DONE;
      s->writers++;
      total = s->total;
    }
  } else if (s->state == FRAG_DEAD && s->writers == 0) {
    s->state = FRAG_FREE;
  }
  bpf_spin_unlock(&bk->lock);
  return total;
}

/* Step 4: the datagram was delivered (or dropped): frees its slot. */
__noinline int frag_release(__u64 ident, __u32 way) {
  __u32 b;
  struct frag_bucket *bk = bucket_of(ident, &b);
  if (!bk) return 0;
  bpf_spin_lock(&bk->lock);
  struct frag_slot *s = SLOT(bk, way);
  s->writers--;
  retire(s);
  bpf_spin_unlock(&bk->lock);
  return 0;
}

/* One fragment of datagram `id` of tunnel `key`: payload of plen bytes at skb offset off,
 * belonging at datagram offset foff; more: not the last piece. See the comment at frag_buckets
 * for the locking. Global too, packed arguments: geometry = foff << 32 | plen,
 * off_more = off | more << 31. */
__noinline int etherip_reassemble(struct __sk_buff *skb, __u32 key, __u32 id, __u64 geometry,
                                  __u32 off_more) {
  __u32 plen = (__u32)geometry, foff = (__u32)(geometry >> 32);
  __u32 off = off_more & 0x7fffffff, more = off_more >> 31;
  struct etherip_tunnel *t = bpf_map_lookup_elem(&tunnels, &key);
  if (!skb || !t) return drop(ETHERIP_UNATTRIBUTED, ETHERIP_DROP_NO_TUNNEL);
  if (plen == 0 || (more && (plen & 7))) return drop(key, ETHERIP_DROP_FRAG_MALFORMED);
  __u64 ident = ((__u64)key << 32) | id;
  int way = frag_claim(ident, foff, plen, more, bpf_ktime_get_ns());
  if (way < 0) return TC_ACT_SHOT;
  way &= FRAG_WAYS - 1;
  __u32 b;
  if (!bucket_of(ident, &b)) return drop(key, ETHERIP_DROP_HELPER); /* not reached */
  __u32 idx = b * FRAG_WAYS + way;
  int copied = frag_copy(skb, idx, off, foff, plen);
  struct etherip_stats *st = stats_of(key);
  if (copied && st) st->rx_fragments++;
  __u32 total = frag_written(ident, way, plen, copied);
  if (!copied) return drop(key, ETHERIP_DROP_TRUNCATED);
  /* Held: not a drop, the datagram is still incomplete (or another piece dropped it). */
  if (!total) return TC_ACT_STOLEN;

  /* This CPU completed the datagram: every other piece's copy finished before its count. */
  int verdict;
  struct frag_buf *buf = bpf_map_lookup_elem(&frag_bufs, &idx);
  if (!buf) {
    verdict = drop(key, ETHERIP_DROP_HELPER);
  } else if (total < 2 + ETH_HLEN || total > ETHERIP_FRAG_MAX) {
    verdict = drop(key, ETHERIP_DROP_TRUNCATED);
  } else if (!version_ok(t, key, *(__be16 *)buf->data)) {
    verdict = TC_ACT_SHOT;
  } else if (emit(skb, buf->data + 2, total - 2)) {
    verdict = drop(key, ETHERIP_DROP_HELPER);
  } else {
    if (st) st->reassembled++;
    verdict = deliver(t, key, total - 2);
  }
  frag_release(ident, way);
  return verdict;
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
    /* The tunnel stands for (source, destination, protocol 97): with the IP id, the datagram. */
    return etherip_reassemble(skb, key, bpf_ntohs(ip.id),
                              (__u64)((frag & IP_OFFSET) * 8) << 32 | plen,
                              off | (frag & IP_MF ? 1u << 31 : 0));
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
  return etherip_reassemble(skb, key, bpf_ntohl(fh.id),
                            (__u64)(fo & ~7) << 32 | (plen - sizeof(fh)),
                            (off + sizeof(fh)) | (fo & 1 ? 1u << 31 : 0));
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
