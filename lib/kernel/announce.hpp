// Announcing that an address moved to this host: a gratuitous ARP request (IPv4: sender and
// target are the address, broadcast) or an unsolicited Neighbor Advertisement (IPv6: to all
// nodes, Override set), sent from the interface that holds the address. Neighbours that have
// the address in their caches take the new MAC at once; without it they keep sending to the
// old holder until their entry goes stale (16 s measured, docs/failover.md).
#pragma once

#include <string>

#include "kernel/inet.hpp"

namespace etherctl::kernel {

// Sends one announcement of `address` (an address of `interface`, in the calling thread's
// network namespace) with `interface`'s MAC. Throws KernelError naming the address when the
// packet cannot be sent.
void announce_address(const std::string& interface, const IpPrefix& address);

}  // namespace etherctl::kernel
