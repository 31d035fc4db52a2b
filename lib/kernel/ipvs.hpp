// IPVS (the kernel's layer-4 load balancer) as two kinds, "ipvs_service" and "ipvs_member",
// over generic netlink. See ipvs.cpp for the ownership mark.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace etherctl::kernel {

// The persistence timeout (seconds) that marks etherctl's services. Without the persistent flag
// the kernel keeps and reports it but never uses it. Below 2^32 / 1000 so that timeout * HZ
// cannot overflow in the kernel at any HZ up to 1000.
inline constexpr uint32_t kIpvsOwnershipTimeout = 2310231;

// The multicast TTL that marks etherctl's sync daemons (ipvs_sync.cpp): they send to a
// link-local group, which is never forwarded, so the TTL has no other effect.
inline constexpr int kIpvsSyncOwnershipTtl = 231;

// "this kernel has no IPVS support (ip_vs)" when the calling thread's network namespace has no
// IPVS generic netlink family, else nullopt.
std::optional<std::string> ipvs_missing();

}  // namespace etherctl::kernel
