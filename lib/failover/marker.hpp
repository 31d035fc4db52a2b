// keepalived's marker address (keepalived.hpp): the state channel of the election. keepalived
// adds it to `lo` on becoming MASTER and removes it on leaving; its presence is the state.
#pragma once

#include "kernel/netlink.hpp"
#include "model/ip.hpp"

namespace etherctl::failover {

// 169.254.0.<virtual router id>, as the model's address type.
model::IpAddress marker_ip(int virtual_router_id);

// Whether the calling thread's network namespace holds the marker of `virtual_router_id` now.
bool marker_present(kernel::Netlink& netlink, int virtual_router_id);

}  // namespace etherctl::failover
