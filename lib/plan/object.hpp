// The unit the planner works on: one kernel object, desired (from the site file) or observed
// (from the kernel). Both sides use the same shape so that diffing is generic.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace etherctl::plan {

// Object kinds. Link kinds share one name space: the interface name.
inline constexpr const char* kVlan = "vlan";             // 802.1Q device, or an adopted interface
inline constexpr const char* kVlanGroup = "vlan_group";  // Linux bridge
inline constexpr const char* kTunnel = "tunnel";         // EtherIP tunnel interface
inline constexpr const char* kPort = "port";             // bridge membership of a link
inline constexpr const char* kSelfIp = "self_ip";        // address on a link
inline constexpr const char* kRoute = "route";           // route in the main table

struct Object {
  std::string kind;
  // Identity, derivable from kernel state alone:
  //   links: interface name; port: "<bridge>/<link>"; self_ip: "<link> <address>/<prefix>";
  //   route: "<destination>" (main table, normalised prefix).
  std::string key;
  std::string name;  // display name: the site file's name when known, else the key
  std::string path;  // JSON pointer into the site file; empty for observed objects
  nlohmann::json attrs = nlohmann::json::object();  // attribute name -> value
  bool owned = false;                               // observed: carries etherctl's ownership mark
  bool adopted = false;  // desired link that etherctl never creates or deletes
};

// Attributes by kind (all values JSON; desired objects only carry the attributes they manage,
// observed objects carry everything the kernel layer read):
//   vlan:       interface (string, parent; absent when adopted), tag (int, absent when adopted),
//               mtu (int), up (bool)
//   vlan_group: mtu (int, optional), up (bool), mode (string; desired only)
//   port:       bridge (string), link (string)
//   self_ip:    interface (string), address (string "addr/prefix", canonical form)
//   route:      destination (string "addr/prefix", canonical), gateway (string, optional),
//               interface (string, optional), family (int AF_INET / AF_INET6)
//   tunnel:     local (string address), remote (string address), mtu (int, optional),
//               accept_reversed (bool), underlay (array of interface names that receive the
//               outer packets: the decap program is attached to their TC ingress), up (bool)
// Observed links additionally carry "ifindex" (int) and "type" (IFLA_INFO_KIND or "").

using Objects = std::vector<Object>;

}  // namespace etherctl::plan
