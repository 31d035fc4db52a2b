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

// A failover pair's master daemon sends every connection with traffic again at most this many
// seconds after its last sync (net.ipv4.vs.sync_refresh_period with sync_period 0, set by
// ipvs_sync.cpp), not every 50th packet of it (the kernel's default), which leaves a connection
// of two packets a second unsent for 25 s: a unit that was away learns the connections made
// meanwhile only from these refreshes.
inline constexpr int kIpvsSyncRefreshSeconds = 2;

// The longest a connection sending a packet a second or more takes to reach a unit that just
// returned: the refresh period, a packet, the master's flush of a partly filled buffer (2 s)
// and its check period (1 s), and 2 s for a loaded host. A returning unit of a pair with pools
// waits this long before it takes the role back (keepalived's preempt_delay), so the
// connections made while it was away are in its table when it does.
inline constexpr int kIpvsSyncSettleSeconds = kIpvsSyncRefreshSeconds + 1 + 2 + 1 + 2;

// "this kernel has no IPVS support (ip_vs)" when the calling thread's network namespace has no
// IPVS generic netlink family, else nullopt.
std::optional<std::string> ipvs_missing();

}  // namespace etherctl::kernel
