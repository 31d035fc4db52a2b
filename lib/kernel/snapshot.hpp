// What the kernel holds, read with one netlink dump per object family (links, addresses,
// routes). Kinds interpret it; nothing here knows about the site model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kernel/netlink.hpp"

namespace etherctl::kernel {

struct LinkInfo {
  int ifindex = 0;
  std::string name;
  std::string type;        // IFLA_INFO_KIND ("vlan", "bridge", "veth", ...) or "" for physical
  std::string alias;       // IFLA_IFALIAS
  int parent_ifindex = 0;  // IFLA_LINK (vlan parent, veth peer); 0 if in another netns
  int master_ifindex = 0;  // IFLA_MASTER (bridge this link is a port of)
  int mtu = 0;
  bool up = false;  // IFF_UP (administrative state)
  int vlan_id = 0;  // IFLA_VLAN_ID for type "vlan"
  std::string mac;  // "aa:bb:cc:dd:ee:ff"

  bool operator==(const LinkInfo&) const = default;
};

struct AddressInfo {
  int ifindex = 0;
  int family = 0;       // AF_INET / AF_INET6
  std::string address;  // canonical text form ("10.1.0.1", "2001:db8::1")
  int prefix = 0;
  uint8_t protocol = 0;  // IFA_PROTO (0 when absent)
  int scope = 0;

  bool operator==(const AddressInfo&) const = default;
};

struct RouteInfo {
  int family = 0;
  uint32_t table = 0;
  uint8_t protocol = 0;
  uint8_t type = 0;         // RTN_UNICAST, ...
  std::string destination;  // canonical "addr/prefix" ("0.0.0.0/0" for default)
  std::string gateway;      // "" when none
  int oif = 0;              // 0 when none
  uint32_t priority = 0;    // RTA_PRIORITY (metric)

  bool operator==(const RouteInfo&) const = default;
};

struct Snapshot {
  std::vector<LinkInfo> links;
  std::vector<AddressInfo> addresses;
  std::vector<RouteInfo> routes;  // main table, unicast, both families

  static Snapshot read(Netlink& netlink);
  const LinkInfo* link_by_name(const std::string& name) const;
  const LinkInfo* link_by_index(int ifindex) const;
};

// One link read by name with RTM_GETLINK: its index and IFF_* flags (IFF_RUNNING is the
// operational state). Throws KernelError (ENODEV) when it is missing.
struct LinkState {
  int ifindex = 0;
  unsigned flags = 0;
};
LinkState link_state(Netlink& netlink, const std::string& name);

// Interface name -> ifindex via RTM_GETLINK; throws KernelError (ENODEV) when missing.
int ifindex_of(Netlink& netlink, const std::string& name);

}  // namespace etherctl::kernel
