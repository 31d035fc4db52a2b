// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Constants, on-the-wire header layouts and small helpers used by every program family:
 * counting, dropping, checksum folding, and the bounds idioms the verifier needs. */
#ifndef ETHERCTL_ETHERIP_HELPERS_H
#define ETHERCTL_ETHERIP_HELPERS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "etherip_maps.h"

#define AF_INET 2
#define AF_INET6 10
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define IPPROTO_FRAGMENT_HDR 44

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

/* An IPv4 header without options, DF clear, TTL 64, checksummed: from src to dst (4 bytes each),
 * with payload_len bytes of protocol behind it. */
static __always_inline struct iphdr ipv4_header(const __u8 *src, const __u8 *dst, __u8 protocol,
                                                __u32 payload_len, __u16 id) {
  struct iphdr ip = {};
  ip.version = 4;
  ip.ihl = 5;
  ip.tot_len = bpf_htons(sizeof(struct iphdr) + payload_len);
  ip.id = bpf_htons(id);
  ip.ttl = 64;
  ip.protocol = protocol;
  __builtin_memcpy(&ip.saddr, src, 4);
  __builtin_memcpy(&ip.daddr, dst, 4);
  __u16 *w = (__u16 *)&ip;
  __u32 sum = 0;
#pragma unroll
  for (int i = 0; i < (int)sizeof(struct iphdr) / 2; i++) sum += w[i];
  ip.check = csum_fold(sum);
  return ip;
}

#endif
