// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Handing a decapsulated frame to the bridge, shared by whole packets (etherip_decap.h) and
 * reassembled datagrams (etherip_reassembly.h): header version check, counting, the redirect out
 * of the eip end, and writing a frame from a buffer. */
#ifndef ETHERCTL_ETHERIP_DELIVER_H
#define ETHERCTL_ETHERIP_DELIVER_H

#include "etherip_helpers.h"

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

/* Sends a decapsulated frame out of the eip end: it arrives at its veth peer, the bridge port.
 * The frame is marked as received on the queue of this CPU (queue_mapping is the receive queue
 * plus one), so that the veth delivers it to the receive queue of T that belongs to this CPU,
 * whose NAPI instance, and with it GRO, runs here: decapsulation on several CPUs never funnels
 * into one NAPI instance on one of them (lib/datapath/README.md, "Link settings"). The hash of
 * the outer packet (software RPS, a queue choice, or none) is forgotten: whatever hashes the
 * frame later (RPS on T, a qdisc, a queue choice) computes it from the inner headers. */
static __always_inline int deliver(struct __sk_buff *skb, struct etherip_tunnel *t, __u32 key,
                                   __u32 len) {
  struct etherip_stats *s = stats_of(key);
  if (s) {
    s->rx_packets++;
    s->rx_bytes += len;
  }
  skb->queue_mapping = bpf_get_smp_processor_id() + 1;
  bpf_set_hash_invalid(skb);
  return bpf_redirect(t->eip_ifindex, 0);
}

/* Sets the frame length to len, zero-padded to the Ethernet minimum as a NIC would deliver it:
 * a forwarded skb keeps its transport header offset, below which the kernel refuses to trim
 * (34 bytes behind IPv4, 54 behind IPv6), and a short frame could not be delivered otherwise.
 * The kernel refuses to resize a packet that xfrm decrypted (skb->encapsulation is set:
 * -ENOTSUPP, seen on 6.1): such a frame, which has its exact length already (ESP carries no
 * Ethernet padding), is delivered unpadded. */
static __always_inline int fix_tail(struct __sk_buff *skb, __u32 len) {
  __u32 want = len < ETH_ZLEN ? ETH_ZLEN : len;
  if (skb->len < want && bpf_skb_change_tail(skb, want, 0)) return skb->len == len ? 0 : -1;
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

#endif
