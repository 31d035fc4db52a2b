// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* IPsec tunnels (ETHERIP_FLAG_IPSEC) on the receive side: whether EtherIP came out of one of the
 * tunnel's SAs, and sending ESP from the peer to be decrypted. The design (ESP GRO on the
 * tunnel's own veth pair esp-<name> -> dec-<name>) is in lib/datapath/README.md, "IPsec". */
#ifndef ETHERCTL_ETHERIP_IPSEC_H
#define ETHERCTL_ETHERIP_IPSEC_H

#include "etherip_helpers.h"

/* Whether the kernel decrypted this packet with an SA of the tunnel: the first transform of the
 * packet's security path (set by xfrm input, kept through the GRO re-injection) has the tunnel's
 * reqid and the peer as its source. Everything else is clear text, whatever its source address
 * says. IPv4 tunnels only (the loader refuses IPsec on IPv6 ones). */
static __always_inline int decrypted_by_tunnel_sa(struct __sk_buff *skb,
                                                  const struct etherip_tunnel *t) {
  struct bpf_xfrm_state xs = {};
  if (bpf_skb_get_xfrm_state(skb, 0, &xs, sizeof(xs), 0)) return 0;
  __u32 remote;
  __builtin_memcpy(&remote, t->remote, 4);
  return xs.reqid == t->reqid && xs.family == AF_INET && xs.remote_ipv4 == remote;
}

/* A whole ESP packet from the peer goes out of esp-<name>: its veth peer dec-<name> has GRO on
 * and esp-<name> no segmentation offload, so the packet takes dec-<name>'s NAPI and GRO, where
 * esp4_offload decrypts it (transport and tunnel mode alike) and re-injects the clear packet,
 * with its security path, at dec-<name>'s TC ingress: this program again. The queue is this
 * CPU's, as in deliver(): a veth uses NAPI only for a queue it has. ESP that arrives at
 * dec-<name> still encrypted found no SA for its SPI (or no ESP GRO): dropped and counted, never
 * handed to the stack, where transport-mode ESP would end in local delivery. */
static __always_inline int send_esp(struct __sk_buff *skb, const struct etherip_tunnel *t,
                                    __u32 key) {
  if (skb->ifindex == t->dec_ifindex) return drop(key, ETHERIP_DROP_ESP_NO_SA);
  if (bpf_skb_store_bytes(skb, 0, t->dec_mac, ETH_ALEN, 0)) return drop(key, ETHERIP_DROP_HELPER);
  skb->queue_mapping = bpf_get_smp_processor_id() + 1;
  return bpf_redirect(t->esp_ifindex, 0);
}

#endif
