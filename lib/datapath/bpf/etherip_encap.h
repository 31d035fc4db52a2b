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

static __always_inline void count_sent(__u32 key, __u32 inner_len) {
  struct etherip_stats *s = stats_of(key);
  if (s) {
    s->tx_packets++;
    s->tx_bytes += inner_len;
  }
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
      count_sent(key, inner_len);
      return bpf_redirect(key, BPF_F_INGRESS);
    }
    if (bpf_clone_redirect(skb, key, BPF_F_INGRESS)) return drop(key, ETHERIP_DROP_HELPER);
    at += size;
  }
  return drop(key, ETHERIP_DROP_HELPER); /* not reached: the pieces cover len */
}

/* The frame's VLAN tags: the receive path moved its outer 802.1Q/802.1ad tag into skb metadata
 * before TC ingress; popping it moves a second one up (QinQ). */
struct vlan_tags {
  __be16 tci_proto[4]; /* proto, TCI of the outer tag, then of the inner one */
  __u32 len;           /* 0, 4 or 8 bytes */
};

static __always_inline int pop_tags(struct __sk_buff *skb, struct vlan_tags *tags) {
  tags->len = 0;
#pragma unroll
  for (int i = 0; i < 2; i++) {
    if (!skb->vlan_present) break;
    tags->tci_proto[2 * i] = (__be16)skb->vlan_proto;
    tags->tci_proto[2 * i + 1] = bpf_htons((__u16)skb->vlan_tci);
    tags->len += 4;
    if (bpf_skb_vlan_pop(skb)) return -1;
  }
  return 0;
}

/* Writes the inner frame's addresses and tags behind the hdr_len bytes of room:
 * [hdr_len][dst src][tags][...]. */
static __always_inline int put_inner_header(struct __sk_buff *skb, __u32 hdr_len,
                                            const struct ethhdr *eth,
                                            const struct vlan_tags *tags) {
  if (bpf_skb_store_bytes(skb, hdr_len, eth, 12, 0)) return -1;
  if (tags->len == 4 && bpf_skb_store_bytes(skb, hdr_len + 12, tags->tci_proto, 4, 0)) return -1;
  if (tags->len == 8 && bpf_skb_store_bytes(skb, hdr_len + 12, tags->tci_proto, 8, 0)) return -1;
  return 0;
}

/* Room for the outer headers (hdr_len bytes) in front of the inner frame, whose VLAN tags go
 * back into it: [hdr_len bytes][dst src][tags][type][payload].
 * IP frames grow with bpf_skb_adjust_room(), which also moves the skb's network header onto the
 * outer IP header (bpf_skb_change_proto() names the outer family when the inner one differs):
 * such a packet goes to the stack from here, in the same pass (send_into_stack). adjust_room
 * refuses other frames (ARP, LLDP, ...): they grow with bpf_skb_change_head(), which leaves the
 * network header on the inner frame, and re-enter through eip's ingress (send_reinjected).
 * Returns 1 for the first kind, 0 for the second, -1 when a helper failed. */
static __always_inline int make_room(struct __sk_buff *skb, const struct etherip_tunnel *t,
                                     __u32 hdr_len, const struct vlan_tags *tags) {
  struct ethhdr eth;
  if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth))) return -1;
  __u32 grow = hdr_len + tags->len;
  __be16 inner = skb->protocol;
  if (inner != bpf_htons(ETH_P_IP) && inner != bpf_htons(ETH_P_IPV6)) {
    /* [grow][dst src][type][payload] */
    if (bpf_skb_change_head(skb, grow, 0)) return -1;
    return put_inner_header(skb, hdr_len, &eth, tags) ? -1 : 0;
  }
  /* adjust_room puts the room behind the 14-byte MAC header, which stays in front:
   * [dst src type][room][payload]. change_proto then adds (IPv4 inside IPv6) or removes (IPv6
   * inside IPv4) the 20 bytes by which the two IP headers differ, at the same place. */
  __be16 outer = t->family == ETHERIP_FAMILY_V4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
  __s32 room = (__s32)grow;
  if (inner != outer) room += inner == bpf_htons(ETH_P_IP) ? -20 : 20;
  if (bpf_skb_adjust_room(skb, room, BPF_ADJ_ROOM_MAC, 0)) return -1;
  if (inner != outer && bpf_skb_change_proto(skb, outer, 0)) return -1;
  if (put_inner_header(skb, hdr_len, &eth, tags) ||
      bpf_skb_store_bytes(skb, hdr_len + 12 + tags->len, &eth.h_proto, 2, 0))
    return -1;
  return 1;
}

/* ---- How an encapsulated packet leaves. One function each, so that another way (an xfrm
 * interface, say) is one more function beside them. */

/* Into the stack as if received on eip, in this pass: the skb's headers already describe the
 * outer packet (make_room returned 1). Routing, netfilter, xfrm policies and IPv4
 * fragmentation follow, as for any forwarded packet. The outer destination MAC is eip's own,
 * but pkt_type still reflects the inner destination, and IP drops frames for other hosts; the
 * mark is cleared as on the re-injected path, so that policy routing by fwmark sees the
 * tunnel's packets alike. */
static __always_inline int send_into_stack(struct __sk_buff *skb, __u32 key) {
  if (bpf_skb_change_type(skb, PACKET_HOST)) return drop(key, ETHERIP_DROP_HELPER);
  skb->mark = 0;
  return TC_ACT_OK;
}

/* Into eip's own ingress, marked (make_room returned 0, and the IPv6 send path's fragments):
 * the receive path parses the outer headers afresh and etherip_encap lets its marked packet
 * pass. One more trip through the backlog than send_into_stack. */
static __always_inline int send_reinjected(struct __sk_buff *skb, __u32 key) {
  skb->mark = ETHERIP_MARK;
  return bpf_redirect(key, BPF_F_INGRESS);
}

/* The route to the peer as bpf_fib_lookup sees it for an IPv4 outer packet of inner_len bytes
 * of frame, routed as if received on eip (as on the stack path). */
static __always_inline long fib_lookup4(struct __sk_buff *skb, const struct etherip_tunnel *t,
                                        __u32 key, __u32 inner_len, struct bpf_fib_lookup *fib) {
  __builtin_memset(fib, 0, sizeof(*fib));
  fib->family = AF_INET;
  fib->l4_protocol = ETHERIP_IPPROTO;
  fib->tot_len = sizeof(struct iphdr) + 2 + inner_len;
  fib->ifindex = key;
  __builtin_memcpy(&fib->ipv4_src, t->local, 4);
  __builtin_memcpy(&fib->ipv4_dst, t->remote, 4);
  return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

/* Out of the underlay to the next hop that fib names, skipping the stack. */
static __always_inline int redirect_to_next_hop(struct __sk_buff *skb,
                                                const struct bpf_fib_lookup *fib) {
  __u8 macs[12];
  __builtin_memcpy(macs, fib->dmac, 6);
  __builtin_memcpy(macs + 6, fib->smac, 6);
  if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0)) return -1;
  return bpf_redirect(fib->ifindex, 0);
}

/* Opt-in fast path (IPv4 outer only): when the route's MTU fits and the neighbour is known,
 * straight out of the underlay, skipping the stack, and with it netfilter and IPsec policies,
 * hence opt-in. Returns -1 when the packet has to take the stack after all. */
static __always_inline int send_fast(struct __sk_buff *skb, const struct etherip_tunnel *t,
                                     __u32 key, __u32 inner_len) {
  if (!(t->flags & ETHERIP_FLAG_FAST_PATH) || t->family != ETHERIP_FAMILY_V4 ||
      skb->protocol != bpf_htons(ETH_P_IP))
    return -1;
  struct bpf_fib_lookup fib;
  if (fib_lookup4(skb, t, key, inner_len, &fib) != BPF_FIB_LKUP_RET_SUCCESS) return -1;
  return redirect_to_next_hop(skb, &fib);
}

/* The outer IPv4 header, checksummed. The id is unique per packet so that the peer never mixes
 * fragments of different datagrams; DF clear: oversized packets get fragmented, as RFC 3378
 * peers do. */
static __always_inline struct iphdr outer_ipv4(struct etherip_tunnel *t, __u32 inner_len) {
  return ipv4_header(t->local, t->remote, ETHERIP_IPPROTO, 2 + inner_len,
                     (__u16)__sync_fetch_and_add(&t->ip_id, 1));
}

/* Outer Ethernet (eip's own MAC both ways) + IPv4 + EtherIP header in front of the room that
 * make_room left. */
static __always_inline int write_outer4(struct __sk_buff *skb, struct etherip_tunnel *t,
                                        __u32 inner_len) {
  struct outer4 h = {};
  __builtin_memcpy(h.eth.h_dest, t->mac, ETH_ALEN);
  __builtin_memcpy(h.eth.h_source, t->mac, ETH_ALEN);
  h.eth.h_proto = bpf_htons(ETH_P_IP);
  h.ip = outer_ipv4(t, inner_len);
  h.etherip = bpf_htons(ETHERIP_HDR_V3);
  return bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0) ? -1 : 0;
}

SEC("tc")
int etherip_encap(struct __sk_buff *skb) {
  /* Our own outer packet coming back through the device's ingress (send_reinjected): hand it
   * to the stack, without the mark so that policy routing by fwmark is not disturbed. */
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

  struct vlan_tags tags;
  if (pop_tags(skb, &tags)) return drop(key, ETHERIP_DROP_HELPER);
  if (t->clamp_mtu) clamp_mss(skb, t, tags.len);
  __u32 inner_len = skb->len + tags.len;
  __u32 hdr_len = t->family == ETHERIP_FAMILY_V4 ? sizeof(struct outer4) : sizeof(struct outer6);
  int direct = make_room(skb, t, hdr_len, &tags);
  if (direct < 0) return drop(key, ETHERIP_DROP_HELPER);

  if (t->family == ETHERIP_FAMILY_V4) {
    if (write_outer4(skb, t, inner_len)) return drop(key, ETHERIP_DROP_HELPER);
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

  count_sent(key, inner_len);
  int sent = send_fast(skb, t, key, inner_len);
  if (sent >= 0) return sent;
  return direct ? send_into_stack(skb, key) : send_reinjected(skb, key);
}

/* Encapsulation at the tunnel port's own TC egress (T, where the bridge hands the frame to the
 * tunnel), for fast-path tunnels with an IPv4 outer: straight to the next hop out of the
 * underlay, without the T -> eip crossing (a backlog hand-over per frame) and without the
 * stack. Only a plain case is taken here; everything else passes untouched (TC_ACT_OK) over the
 * veth to etherip_encap, which handles it as before: GSO skbs (TC egress runs before the kernel
 * segments them for T, and protocol 97 has no GSO), non-IP and VLAN-tagged frames, routes whose
 * MTU is too small (fragmentation), unresolved neighbours and any other lookup result. Nothing
 * is changed before that decision, so the fallback sees the frame as the bridge sent it. */
SEC("tc")
int etherip_encap_port(struct __sk_buff *skb) {
  __u32 port = skb->ifindex;
  __u32 *found = bpf_map_lookup_elem(&ports, &port);
  if (!found) return TC_ACT_OK;
  __u32 key = *found;
  struct etherip_tunnel *t = bpf_map_lookup_elem(&tunnels, &key);
  if (!t || !(t->flags & ETHERIP_FLAG_FAST_PATH) || (t->flags & ETHERIP_FLAG_IPSEC) ||
      t->family != ETHERIP_FAMILY_V4 || skb->gso_size || skb->vlan_present ||
      (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6)))
    return TC_ACT_OK;
  __u32 inner_len = skb->len;
  struct bpf_fib_lookup fib;
  if (fib_lookup4(skb, t, key, inner_len, &fib) != BPF_FIB_LKUP_RET_SUCCESS) return TC_ACT_OK;

  if (t->clamp_mtu) clamp_mss(skb, t, 0);
  struct vlan_tags none = {};
  if (make_room(skb, t, sizeof(struct outer4), &none) != 1 || write_outer4(skb, t, inner_len))
    return drop(key, ETHERIP_DROP_HELPER);
  count_sent(key, inner_len);
  int sent = redirect_to_next_hop(skb, &fib);
  return sent >= 0 ? sent : drop(key, ETHERIP_DROP_HELPER);
}

#endif
