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

// Starts resolution (ARP or neighbour discovery) of `address` on the link `interface`, as a
// packet sent to it would: an RTM_NEWNEIGH with NTF_USE creates the entry when it is missing
// and probes it, without writing any state by hand. The answer arrives later; the next run
// (or `watch`, woken by the neighbour event) sees it. Counts as one netlink write. Throws
// kernel::KernelError, or std::invalid_argument for an interface `snapshot` does not know.
void resolve_neighbour(kernel::Netlink& netlink, const kernel::Snapshot& snapshot,
                       const std::string& interface, const model::IpAddress& address);

}  // namespace etherctl::location
