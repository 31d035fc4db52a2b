// keepalived as the VRRP engine of a failover group: the configuration etherctl renders for
// one unit, and the command line that runs it. Pure code (no processes, no kernel).
//
// keepalived runs the election only. Its single virtual address is a *marker* on the loopback
// device (169.254.0.<virtual router id>/32, scope host): keepalived 2.2.7 refuses a VRRPv3
// instance without a virtual address, and when keepalived owns the floating self IPs it
// removes them before it tells anyone that it left MASTER, so nobody could take the unit out
// of the segments first. etherctl owns the floating addresses and the ports; the marker is how
// it learns the state: keepalived adds it on becoming MASTER and removes it on leaving (a
// netlink address event, as fast as the notify FIFO, 2.9 against 2.3 ms measured). The FIFO is
// not used: keepalived 2.2.7 stops writing it after a reload (SIGHUP), while the marker stays.
#pragma once

#include <string>
#include <vector>

namespace etherctl::failover {

// VRRPv3 advertisement interval limits: a 12-bit field in centiseconds (RFC 5798 5.2.7).
inline constexpr int kMinAdvertCentiseconds = 1;
inline constexpr int kMaxAdvertCentiseconds = 4095;
// The default interval: 0.1 s. See docs/failover.md ("Why advert_int 0.1").
inline constexpr int kDefaultAdvertCentiseconds = 10;
// Nice value of keepalived's VRRP process, so that adverts leave on time on a busy host. Not
// real-time (vrrp_rt_priority): keepalived 2.2.7 then gets its VRRP process killed by its own
// RLIMIT_RTTIME on every reload (measured; the respawned process drops and retakes MASTER).
inline constexpr int kKeepalivedNice = -10;

// What one unit's keepalived runs.
struct KeepalivedSettings {
  std::string group;          // failover group name: the vrrp_instance's name
  std::string device;         // this unit's device name (the configuration's comment, router_id)
  std::string interface;      // the VRRP interface (the group's VLAN on this unit)
  int virtual_router_id = 0;  // 1..255
  int priority = 100;         // 1..254 (255 means address owner in VRRP)
  int advert_centiseconds = kDefaultAdvertCentiseconds;  // 1..4095
  bool preempt = true;
  int preempt_delay_seconds = 0;  // 0..1000; with preempt only
  // Links whose loss puts the instance into FAULT (besides `interface`, always tracked).
  std::vector<std::string> track_interfaces;
  // Unicast VRRP: this unit's source address and the peer's (multicast 224.0.0.18 when empty).
  std::string unicast_source;
  std::vector<std::string> unicast_peers;
  // keepalived's track_file (weight 0): the instance is in FAULT while this file holds a
  // non-zero number, and keepalived creates it holding 1. etherctl's agent writes 0 once it
  // applies transitions, and 1 again when it stops after leaving the active role: a unit whose
  // agent does not run never becomes master (it could not forward), and an agent that dies
  // leaves the election alone (its restart adopts the running keepalived).
  std::string agent_ready_file;
  std::string netns;  // network namespace name (top-level net_namespace), "" for none
};

// The track_file name in the rendered configuration.
inline constexpr const char* kAgentTrackFile = "etherctl_agent";

// The marker address of a virtual router id: "169.254.0.<id>".
std::string marker_address(int virtual_router_id);

// The whole configuration file. Throws std::invalid_argument naming the setting when a value
// is out of range or a name or path could not be written into keepalived's syntax safely
// (whitespace, quotes, braces, '#', '!', control characters).
std::string render_keepalived_conf(const KeepalivedSettings& settings);

// Files of one keepalived instance.
struct KeepalivedFiles {
  std::string config;
  std::string pid_file;       // the parent (-p)
  std::string vrrp_pid_file;  // the VRRP child (-r)
};

// argv of keepalived for `files`: VRRP only, no fork (the parent stays the process that was
// started), logging to the console (its standard output and error, which the caller
// redirects), no syslog.
std::vector<std::string> keepalived_argv(const std::string& binary, const KeepalivedFiles& files);

}  // namespace etherctl::failover
