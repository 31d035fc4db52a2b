// Reads what locating pool members needs from the kernel: the neighbour tables (IPv4 and IPv6)
// and the bridge forwarding databases, one netlink dump each.
#pragma once

#include "kernel/netlink.hpp"
#include "kernel/snapshot.hpp"
#include "location/location.hpp"

namespace etherctl::location {

// Interface names come from `snapshot` (its links); entries on links it does not know are
// left out. Throws kernel::KernelError when a dump fails.
Observation read_observation(kernel::Netlink& netlink, const kernel::Snapshot& snapshot);

}  // namespace etherctl::location
