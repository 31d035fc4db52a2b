// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Decapsulation: the program on TC ingress of each underlay interface (and of dec-<tunnel> for
 * IPsec tunnels). Accepts protocol 97 from configured peers only (and for IPsec tunnels only
 * what one of the tunnel's SAs decrypted), checks the outer headers, strips them (or hands
 * fragments to reassembly) and sends the inner frame to the bridge. ESP from the peer of an
 * IPsec tunnel is sent (whole, or reassembled) to be decrypted. */
#ifndef ETHERCTL_ETHERIP_DECAP_H
#define ETHERCTL_ETHERIP_DECAP_H

#include "etherip_deliver.h"
#include "etherip_ipsec.h"
#include "etherip_reassembly.h"

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
    return deliver(skb, t, key, inner);
  }

  /* adjust_room refuses results shorter than an IP header (for example ARP inside IPv6), so
   * short frames are copied. The outer Ethernet header may already hold the inner one. */
  __u32 zero = 0;
  struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
  if (!sc) return drop(key, ETHERIP_DROP_HELPER);
  BOUNDED_SIZE(n, inner, ETHERIP_FRAG_MAX, return drop(key, ETHERIP_DROP_HELPER));
  if (bpf_skb_load_bytes(skb, off + 2, sc->buf, n)) return drop(key, ETHERIP_DROP_TRUNCATED);
  if (emit(skb, sc->buf, inner)) return drop(key, ETHERIP_DROP_HELPER);
  return deliver(skb, t, key, inner);
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
  if (ip.version != 4) return TC_ACT_UNSPEC;
  int esp = ip.protocol == IPPROTO_ESP;
  if (!esp && ip.protocol != ETHERIP_IPPROTO) return TC_ACT_UNSPEC;

  struct etherip_peer_key pk = {.family = ETHERIP_FAMILY_V4};
  __builtin_memcpy(pk.local, &ip.daddr, 4);
  __builtin_memcpy(pk.remote, &ip.saddr, 4);
  __u32 *kp = bpf_map_lookup_elem(&peers, &pk);
  if (!kp) return esp ? TC_ACT_UNSPEC : not_a_peer(skb, ETHERIP_FAMILY_V4, pk.remote, pk.local);
  __u32 key = *kp;
  struct etherip_tunnel *t = bpf_map_lookup_elem(&tunnels, &key);
  if (!t) return drop(ETHERIP_UNATTRIBUTED, ETHERIP_DROP_NO_TUNNEL);
  if (t->flags & ETHERIP_FLAG_IPSEC) {
    /* Every piece is checked: the security path is per packet. */
    if (!esp && !decrypted_by_tunnel_sa(skb, t)) return drop(key, ETHERIP_DROP_PLAINTEXT);
  } else if (esp) {
    return TC_ACT_UNSPEC; /* the host's own IPsec between the two addresses, not the tunnel's */
  }

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
    /* The tunnel stands for (source, destination, protocol 97): with the IP id, the datagram.
     * ESP fragments are reassembled alike (TC ingress comes before IP reassembly, and neither
     * GRO nor xfrm in transport mode would bring them back here). */
    return etherip_reassemble(skb, key, bpf_ntohs(ip.id),
                              (__u64)((frag & IP_OFFSET) * 8) << 32 | plen,
                              off | (frag & IP_MF ? 1u << 31 : 0) | (esp ? 1u << 30 : 0));
  }
  if (esp) return send_esp(skb, t, key);
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
  /* IPsec over IPv6 is refused by the loader; should such an entry exist, nothing passes. */
  if (t->flags & ETHERIP_FLAG_IPSEC) return drop(key, ETHERIP_DROP_PLAINTEXT);

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

#endif
