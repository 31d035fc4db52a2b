// The typed site model (site.json, schema version 1). Every object keeps the JSON pointer it
// came from so that errors and plan changes can name their place in the file.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/ip.hpp"
#include "model/ipsec.hpp"
#include "model/problem.hpp"

namespace etherctl::model {

inline constexpr int kSchemaVersion = 1;
// Largest tunnel MTU: the EtherIP datapath reassembles (and, over IPv6, fragments) outer
// datagrams of up to 9240 bytes, a 9216-byte packet in a double-tagged Ethernet frame plus the
// EtherIP header (engine.cpp checks it against datapath::kMaxTunnelMtu).
inline constexpr int kMaxTunnelMtu = 9216;

struct Vlan {
  std::string name;
  std::string path;
  std::string interface;   // parent (tagged) or the adopted interface itself (untagged)
  std::optional<int> tag;  // 802.1Q id; absent: the VLAN is `interface` itself
  std::optional<int> mtu;
  // The kernel interface name: the VLAN name for a tagged VLAN, else the adopted interface.
  const std::string& ifname() const { return tag ? name : interface; }
};

struct VlanGroup {
  std::string name;
  std::string path;
  std::vector<std::string> members;  // VLAN or tunnel names
  std::string mode;                  // "transparent"
  std::optional<int> mtu;
};

struct SelfIp {
  std::string name;
  std::string path;
  IpPrefix address;
  std::string vlan;       // VLAN or VLAN group name
  bool floating = false;  // held by the active unit of a failover group only
};

struct Route {
  std::string name;
  std::string path;
  IpPrefix destination;
  std::optional<IpAddress> gateway;
  std::optional<std::string> vlan;  // VLAN or VLAN group name
};

// A pool member (an IPVS real server), keyed in the file by "addr:port" ("[addr]:port" for IPv6).
struct PoolMember {
  std::string key;  // as written in the file
  std::string path;
  IpAddress address;
  int port = 0;
  int weight = 1;  // 0..65535; 0 = quiesced (existing connections only)
};

// A pool: one IPVS virtual service and its members (see pools.cpp).
struct Pool {
  std::string name;
  std::string path;
  IpAddress address;  // the virtual address
  // "virtual": {"vlan": ...}: the VLAN or VLAN group that faces the clients, where etherctl
  // puts the virtual address (place_virtual_address in pools.hpp); otherwise found from the
  // self IPs.
  std::optional<std::string> virtual_vlan;
  int port = 0;
  std::string protocol = "tcp";  // "tcp" or "udp"
  std::string scheduler = "wlc";
  std::map<std::string, PoolMember> members;  // by file key
  struct Monitor {
    std::string type = "virtual_location";
    int interval = 5;  // seconds
    int min_active_members = 1;
  };
  std::optional<Monitor> monitor;
};

// A device's place in a failover group: "failover": {"group": "dc1", "priority": 200}.
struct DeviceFailover {
  std::string path;
  std::string group;
  int priority = 0;  // VRRP priority, 1..254; the higher one is master when both can be
};

struct Device {
  std::string name;
  std::string path;
  std::map<std::string, Vlan> vlans;
  std::map<std::string, VlanGroup> vlan_groups;
  std::map<std::string, SelfIp> self_ips;
  std::map<std::string, Route> routes;
  std::map<std::string, Pool> pools;
  std::optional<DeviceFailover> failover;

  // The kernel interface of a VLAN or VLAN group reference (a VLAN group is its bridge).
  std::string ifname_of(const std::string& vlan_or_group) const {
    auto vlan = vlans.find(vlan_or_group);
    return vlan != vlans.end() ? vlan->second.ifname() : vlan_or_group;
  }
};

// Two devices of one data center that share a configuration: keepalived (VRRP) elects the
// active one, which holds the floating self IPs and forwards; the other is standby
// (docs/failover.md).
struct FailoverGroup {
  std::string name;
  std::string path;
  std::vector<std::string> devices;  // exactly two
  std::string vlan;                  // the VLAN (or VLAN group) the units elect on
  int virtual_router_id = 0;         // 1..255; also the IPVS connection sync id
  int advert_centiseconds = 10;      // "advert_int" in seconds (0.01..40.95); default 0.1
  bool preempt = true;               // the higher priority takes over again when it returns
  int preempt_delay = 0;             // seconds it waits before that, 0..1000
  bool unicast = false;              // VRRP to the peer's fixed self IP, not 224.0.0.18
};

// One end of a tunnel: a device of the site file (managed: its self IP), or a peer that
// etherctl does not manage (a BIG-IP, an OpenBSD etherip(4), a FreeBSD gif(4), ...), named by
// the file but not a device of it: `{"address": "203.0.113.7", "managed": false}`.
struct TunnelEndpoint {
  IpAddress address;
  bool managed = true;
};

struct Tunnel {
  std::string name;
  std::string path;
  std::string profile;                              // "etherip"
  std::map<std::string, TunnelEndpoint> endpoints;  // device (or peer) name -> endpoint
  std::optional<int> mtu;
  bool accept_reversed_header = false;  // accept 0x0300 from old FreeBSD/NetBSD peers
  bool fast_path = false;               // route fitting outer packets in BPF (bpf_fib_lookup)
  bool clamp_tcp_mss = true;            // lower the MSS of SYNs entering the tunnel
  std::optional<Ipsec> ipsec;           // ESP between the endpoints, keys by strongSwan
};

struct Site {
  int version = kSchemaVersion;
  std::map<std::string, Device> devices;
  std::map<std::string, Tunnel> tunnels;
  std::map<std::string, FailoverGroup> failover_groups;
};

// The failover group `device` is a unit of, or nullptr.
const FailoverGroup* failover_group_of(const Site& site, const Device& device);
// The other unit of `device`'s failover group, or nullptr.
const Device* failover_peer(const Site& site, const Device& device);
// The name `device` goes by among tunnel endpoints: its failover group's, else its own.
const std::string& endpoint_name(const Site& site, const Device& device);

struct LoadResult {
  std::optional<Site> site;  // set only when problems is empty
  Problems problems;
};

// Parses and validates site text. All problems are reported in one run.
LoadResult load_site(const std::string& text);
// Reads a file and loads it; unreadable files are a problem at path "".
LoadResult load_site_file(const std::string& file_name);

// Picks the device to apply: `requested` if given, else the only device, else the device
// named like `hostname`. On failure returns nullopt and sets *error.
const Device* select_device(const Site& site, const std::optional<std::string>& requested,
                            const std::string& hostname, std::string* error);

// Linux interface name rules (dev_valid_name): 1..15 bytes, not "." or "..", no '/', ':' or
// whitespace. Returns "" when valid, else the reason.
std::string interface_name_problem(const std::string& name, size_t max_bytes = 15);

}  // namespace etherctl::model
