// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Encapsulation: the program on TC ingress of "eip-<tunnel>" (frames the bridge sent out of the
 * tunnel's port), TCP MSS clamping and the IPv6 send path's own fragmentation. */
#ifndef ETHERCTL_ETHERIP_ENCAP_H
#define ETHERCTL_ETHERIP_ENCAP_H

#include "etherip_helpers.h"

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

#endif
