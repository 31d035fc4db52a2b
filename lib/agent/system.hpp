// The agent's dealings with its host: systemd notifications and dropping capabilities.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace etherctl::agent {

// sd_notify(3) when started by systemd (NOTIFY_SOCKET set); a no-op otherwise.
void notify(const std::string& state);
// The watchdog interval systemd asks for (WatchdogSec=), 0 when none.
uint64_t watchdog_usec();

// The capabilities a reconcile needs: netlink changes (CAP_NET_ADMIN), BPF programs and maps
// (CAP_BPF, and CAP_SYS_ADMIN for bpffs mounts and older kernels), nothing else. A unit of a
// failover group also keeps what watching the election and running keepalived take: raw and
// packet sockets (CAP_NET_RAW: the advertisement tap, announcements, keepalived's VRRP),
// keepalived's nice value and locked memory (CAP_SYS_NICE, CAP_IPC_LOCK).
std::vector<int> kept_capabilities(bool failover);
// Drops every other capability from the bounding, permitted, effective and inheritable sets.
// Throws std::system_error when the kernel refuses. Returns the names of the kept ones that
// the process actually had (for the log).
std::vector<std::string> drop_capabilities(bool failover);

}  // namespace etherctl::agent
