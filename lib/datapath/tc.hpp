// The datapath's TC filters: clsact + cls_bpf direct-action on ingress (works on 6.1, unlike TCX
// links), one filter of ours per device (handle and priority kTcHandle/kTcPriority). Internal to
// lib/datapath.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace etherctl::datapath {

// Which clsact hook: ingress (encap on eip, decap on underlays) or egress (the fast path's
// encap on the tunnel port).
enum class Side { Ingress, Egress };

// clsact + cls_bpf direct-action (works on 6.1, unlike TCX links); REPLACE swaps the program
// of our filter atomically, so packets never see a gap during re-apply.
void tc_attach(int ifindex, int prog_fd, const std::string& ifname, Side side = Side::Ingress);

// Detaches our filter. On an underlay and on the tunnel port (`tidy`), also removes the clsact
// qdisc once it holds no filter at all, so that destroy leaves the link as it found it; another
// tool's filters keep it alive.
void tc_detach(int ifindex, bool tidy = false, Side side = Side::Ingress);

// The id of the program our filter on ifindex's ingress runs, 0 when there is no such filter.
uint32_t attached_prog_id(int ifindex, Side side = Side::Ingress);

// Whether our filter on `ifname`'s ingress runs the program named `program`.
bool program_attached(const std::string& ifname, std::string_view program,
                      Side side = Side::Ingress);

}  // namespace etherctl::datapath
