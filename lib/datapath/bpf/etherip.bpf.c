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
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* One compilation unit (one object, one skeleton); each concern in its own header:
 *   etherip_common.h      types and constants shared with the C++ loader
 *   etherip_maps.h        every map
 *   etherip_helpers.h     constants, header layouts, counting and bounds helpers
 *   etherip_encap.h       program etherip_encap (with MSS clamping and IPv6 fragmentation)
 *   etherip_deliver.h     handing decapsulated frames to the bridge
 *   etherip_ipsec.h       IPsec tunnels: the SA check, ESP sent to be decrypted
 *   etherip_reassembly.h  reassembly of outer fragments
 *   etherip_decap.h       program etherip_decap */
#include "etherip_maps.h"
#include "etherip_helpers.h"
#include "etherip_encap.h"
#include "etherip_deliver.h"
#include "etherip_ipsec.h"
#include "etherip_reassembly.h"
#include "etherip_decap.h"
