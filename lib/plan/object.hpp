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
inline constexpr const char* kIpvsService = "ipvs_service";  // IPVS virtual service (a pool)
inline constexpr const char* kIpvsMember = "ipvs_member";    // IPVS real server of a service
inline constexpr const char* kIpsecPolicy = "ipsec_policy";  // xfrm policies of an IPsec tunnel
inline constexpr const char* kIpsecConnection = "ipsec_connection";  // its strongSwan connection
inline constexpr const char* kIpvsSync = "ipvs_sync";     // IPVS connection sync daemon (failover)
inline constexpr const char* kKeepalived = "keepalived";  // a failover unit's VRRP engine

struct Object {
  std::string kind;
  // Identity, derivable from kernel state alone:
  //   links: interface name; port: "<bridge>/<link>"; self_ip: "<link> <address>/<prefix>";
  //   route: "<destination>" (main table, normalised prefix);
  //   ipvs_service: "<protocol> <address>:<port>" ("tcp 192.0.2.10:80", "udp [2001:db8::1]:53");
  //   ipvs_member: "<service key> -> <address>:<port>" ("tcp 192.0.2.10:80 -> 10.1.0.21:80");
  //   ipsec_policy: "<local> -> <remote>"; ipsec_connection: the tunnel name.
  //   ipvs_sync: "master" or "backup"; keepalived: the failover group's name.
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
//               outer packets: the decap program is attached to their TC ingress), up (bool),
//               ipsec_reqid (int: the reqid of its IPsec SAs, 0 without IPsec; with one, the
//               tunnel has a second veth pair esp-<name>/dec-<name> for the ESP it receives)
//   ipvs_service: protocol ("tcp"/"udp"), address (canonical), port (int), scheduler (string)
//   ipvs_member: service (the service key), address, port, weight (int 0..65535),
//               forward ("masq", "route", "tunnel", "local"; desired: "masq")
//   ipsec_policy: local, remote (addresses), reqid (int), mode ("transport"/"tunnel"),
//               directions (["in", "out"]), exact (bool: priority, action, template as written)
//   ipsec_connection: the connection's spec (ipsec::ConnectionSpec::attrs: addresses,
//               identities, mode, reqid, proposals, lifetimes, psk_file + psk_fingerprint or
//               certificate/key/ca), loaded (bool: charon has it)
//   ipvs_sync:  interface (string, the multicast interface), syncid (int 0..255)
//   keepalived: config_digest, config_file (see lib/failover/keepalived_kind.hpp)
// Observed links additionally carry "ifindex" (int) and "type" (IFLA_INFO_KIND or "").

using Objects = std::vector<Object>;

// "192.0.2.10:80", "[2001:db8::1]:80": an IPVS address and port as keys and ipvsadm show them.
inline std::string ipvs_endpoint(const std::string& address, int port) {
  return address.find(':') != std::string::npos ? "[" + address + "]:" + std::to_string(port)
                                                : address + ":" + std::to_string(port);
}
inline std::string ipvs_service_key(const std::string& protocol, const std::string& address,
                                    int port) {
  return protocol + " " + ipvs_endpoint(address, port);
}
inline std::string ipvs_member_key(const std::string& service, const std::string& address,
                                   int port) {
  return service + " -> " + ipvs_endpoint(address, port);
}

}  // namespace etherctl::plan
