#include "model/validate.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "model/failover.hpp"
#include "model/fields.hpp"
#include "model/pools.hpp"

namespace etherctl::model {

namespace {

// Tunnels that have an endpoint on `device` (named by the device, or by its failover group).
std::vector<const Tunnel*> tunnels_of(const Site& site, const Device& device) {
  std::vector<const Tunnel*> tunnels;
  const std::string& endpoint = endpoint_name(site, device);
  for (const auto& [name, tunnel] : site.tunnels) {
    if (tunnel.endpoints.count(endpoint)) tunnels.push_back(&tunnel);
  }
  return tunnels;
}

template <typename Map>
std::vector<std::string> keys_of(const Map& map) {
  std::vector<std::string> keys;
  keys.reserve(map.size());
  for (const auto& [key, unused] : map) keys.push_back(key);
  return keys;
}

std::string unknown(const std::string& what, const std::string& name,
                    const std::vector<std::string>& candidates) {
  std::string message = "unknown " + what + " \"" + name + "\"";
  std::string suggestion = closest_match(name, candidates);
  if (!suggestion.empty()) message += "; did you mean \"" + suggestion + "\"?";
  return message;
}

void validate_device(const Site& site, const Device& device, Problems& problems) {
  // Interface names this device would hold, to catch two objects wanting one interface.
  std::map<std::string, std::string> interface_users;  // ifname -> pointer of first user
  auto claim_interface = [&](const std::string& ifname, const std::string& path) {
    auto [it, inserted] = interface_users.emplace(ifname, path);
    if (!inserted) {
      problems.push_back({path, "interface \"" + ifname + "\" is also used by " + it->second});
    }
  };

  std::map<std::pair<std::string, int>, std::string> tags;  // (parent, tag) -> VLAN name
  for (const auto& [name, vlan] : device.vlans) {
    claim_interface(vlan.ifname(), vlan.path);
    if (vlan.tag && *vlan.tag != 0) {
      auto [it, inserted] = tags.emplace(std::make_pair(vlan.interface, *vlan.tag), name);
      if (!inserted) {
        problems.push_back({pointer_append(vlan.path, "tag"),
                            "tag " + std::to_string(*vlan.tag) + " is already used on " +
                                vlan.interface + " by VLAN \"" + it->second + "\""});
      }
    }
  }

  auto tunnels = tunnels_of(site, device);
  std::set<std::string> tunnel_names;
  for (const Tunnel* tunnel : tunnels) {
    tunnel_names.insert(tunnel->name);
    claim_interface(tunnel->name, tunnel->path);
    claim_interface(tunnel_datapath_ifname(tunnel->name), tunnel->path);
    if (tunnel->ipsec) {
      claim_interface(tunnel_esp_ifname(tunnel->name), tunnel->ipsec->path);
      claim_interface(tunnel_decrypted_ifname(tunnel->name), tunnel->ipsec->path);
    }
  }

  std::vector<std::string> member_candidates = keys_of(device.vlans);
  member_candidates.insert(member_candidates.end(), tunnel_names.begin(), tunnel_names.end());
  std::map<std::string, std::string> group_of;  // member -> group
  for (const auto& [name, group] : device.vlan_groups) {
    claim_interface(name, group.path);
    std::set<std::string> seen;
    for (size_t i = 0; i < group.members.size(); ++i) {
      const std::string& member = group.members[i];
      std::string path = pointer_append(pointer_append(group.path, "members"), std::to_string(i));
      if (!device.vlans.count(member) && !tunnel_names.count(member)) {
        std::string message = unknown("VLAN or tunnel", member, member_candidates);
        if (site.tunnels.count(member)) {
          message = "tunnel \"" + member + "\" has no endpoint on device \"" + device.name + "\"";
        }
        problems.push_back({path, message});
        continue;
      }
      if (!seen.insert(member).second) {
        problems.push_back({path, "\"" + member + "\" is listed twice"});
        continue;
      }
      auto [it, inserted] = group_of.emplace(member, name);
      if (!inserted) {
        problems.push_back({path, "\"" + member + "\" is already a member of VLAN group \"" +
                                      it->second + "\"; a VLAN can be in one group only"});
      }
    }
  }

  // A tagged VLAN is created on an interface that exists: etherctl does not build one interface
  // it creates on another (stacked VLANs, a VLAN on a VLAN group's bridge or on a tunnel). The
  // planner creates all of them in one step, in no order among themselves.
  std::map<std::string, std::string> created;  // interface name -> what creates it
  for (const auto& [name, vlan] : device.vlans) {
    if (vlan.tag) created.emplace(name, "tagged VLAN \"" + name + "\"");
  }
  for (const auto& [name, group] : device.vlan_groups) {
    created.emplace(name, "VLAN group \"" + name + "\" (a bridge)");
  }
  for (const Tunnel* tunnel : tunnels) {
    created.emplace(tunnel->name, "tunnel \"" + tunnel->name + "\"");
    created.emplace(tunnel_datapath_ifname(tunnel->name), "tunnel \"" + tunnel->name + "\"");
    if (tunnel->ipsec) {
      created.emplace(tunnel_esp_ifname(tunnel->name), "tunnel \"" + tunnel->name + "\"");
      created.emplace(tunnel_decrypted_ifname(tunnel->name), "tunnel \"" + tunnel->name + "\"");
    }
  }
  for (const auto& [name, vlan] : device.vlans) {
    auto it = vlan.tag ? created.find(vlan.interface) : created.end();
    if (it == created.end()) continue;
    problems.push_back({pointer_append(vlan.path, "interface"),
                        "interface \"" + vlan.interface + "\" is created by " + it->second +
                            "; a tagged VLAN's parent must be an existing interface (stacked "
                            "VLANs and VLANs on VLAN groups or tunnels are not supported)"});
  }

  std::vector<std::string> vlan_candidates = keys_of(device.vlans);
  for (const auto& [name, group] : device.vlan_groups) vlan_candidates.push_back(name);
  // A self IP or route may sit on a VLAN that is not in a group, or on a group.
  auto check_vlan_reference = [&](const std::string& vlan, const std::string& path) {
    if (!device.vlans.count(vlan) && !device.vlan_groups.count(vlan)) {
      problems.push_back({path, unknown("VLAN or VLAN group", vlan, vlan_candidates)});
      return;
    }
    auto it = group_of.find(vlan);
    if (it != group_of.end()) {
      problems.push_back({path, "VLAN \"" + vlan + "\" is a member of VLAN group \"" + it->second +
                                    "\"; use the group \"" + it->second +
                                    "\" instead (a bridge port carries no addresses)"});
    }
  };

  // A pool's virtual address must be local for IPVS to see its packets: etherctl puts it on
  // the VLAN that faces the clients, and refuses the file when it cannot tell which.
  for (const auto& [name, pool] : device.pools) {
    if (pool.address.family == 0) continue;  // reported by the parser
    const std::string virtual_path = pointer_append(pool.path, "virtual");
    if (pool.virtual_vlan) {
      check_vlan_reference(*pool.virtual_vlan, pointer_append(virtual_path, "vlan"));
    }
    const VirtualAddressPlacement placement = place_virtual_address(device, pool);
    if (!placement.error.empty()) {
      problems.push_back({pointer_append(virtual_path, "address"), placement.error});
    }
  }

  std::map<IpAddress, std::string> addresses;  // address -> self IP pointer
  for (const auto& [name, self_ip] : device.self_ips) {
    // An empty name was reported by the parser (missing, not a string, or "").
    if (!self_ip.vlan.empty())
      check_vlan_reference(self_ip.vlan, pointer_append(self_ip.path, "vlan"));
    if (self_ip.address.address.family == 0) continue;  // already reported
    std::string address_path = pointer_append(self_ip.path, "address");
    auto [it, inserted] = addresses.emplace(self_ip.address.address, self_ip.path);
    if (!inserted) {
      problems.push_back({address_path, "address " + self_ip.address.address.str() +
                                            " is also used by " + it->second});
    }
    const auto& a = self_ip.address;
    if (a.address.family == 4 && a.length <= 30) {
      IpAddress broadcast = a.address;
      for (int bit = a.length; bit < 32; ++bit) {
        broadcast.bytes[bit / 8] |= static_cast<uint8_t>(0x80u >> (bit % 8));
      }
      if (a.network().address == a.address) {
        problems.push_back(
            {address_path, a.str() + " is the network address of its subnet, not a host"});
      } else if (broadcast == a.address) {
        problems.push_back(
            {address_path, a.str() + " is the broadcast address of its subnet, not a host"});
      }
    }
  }

  std::map<std::string, std::string> destinations;  // canonical destination -> route pointer
  for (const auto& [name, route] : device.routes) {
    if (route.vlan) check_vlan_reference(*route.vlan, pointer_append(route.path, "vlan"));
    if (route.destination.address.family == 0) continue;
    auto [it, inserted] = destinations.emplace(route.destination.network().str(), route.path);
    if (!inserted) {
      problems.push_back(
          {pointer_append(route.path, "destination"),
           "destination " + route.destination.str() + " is also routed by " + it->second});
    }
    if (route.gateway && route.gateway->family != route.destination.address.family) {
      problems.push_back({pointer_append(route.path, "gateway"),
                          "gateway " + route.gateway->str() + " is not of the same address " +
                              "family as destination " + route.destination.str()});
    }
  }
}

void validate_tunnel(const Site& site, const Tunnel& tunnel, Problems& problems) {
  // The number of endpoints is checked by the parser, which knows whether "endpoints" exists.
  std::string endpoints_path = pointer_append(tunnel.path, "endpoints");
  int family = 0;
  std::set<IpAddress> seen;
  int unmanaged = 0;
  for (const auto& [name, endpoint] : tunnel.endpoints) {
    std::string path = pointer_append(endpoints_path, name);
    const IpAddress& address = endpoint.address;
    if (family != 0 && address.family != family) {
      problems.push_back({path,
                          "both endpoints must be of the same address family (IPv4 or "
                          "IPv6)"});
    }
    family = address.family;
    if (!seen.insert(address).second) {
      problems.push_back({path, "both endpoints have address " + address.str()});
    }
    auto device = site.devices.find(name);
    if (!endpoint.managed) {
      ++unmanaged;
      if (name.empty() || !is_device_name(name)) {
        problems.push_back({path, "peer name \"" + name + "\" " + kDeviceNameRule});
      }
      if (device != site.devices.end()) {
        problems.push_back({path, "\"" + name +
                                      "\" is a device of this file, so etherctl manages it; drop "
                                      "\"managed\": false, or name the unmanaged peer otherwise"});
      }
      if (site.failover_groups.count(name)) {
        problems.push_back({path, "\"" + name +
                                      "\" is a failover group of this file, so etherctl manages "
                                      "it; drop \"managed\": false, or name the unmanaged peer "
                                      "otherwise"});
      }
      continue;
    }
    auto group = site.failover_groups.find(name);
    if (group != site.failover_groups.end()) {
      // A pair's endpoint moves with its active unit: a floating self IP of both units.
      for (const auto& unit_name : group->second.devices) {
        auto unit = site.devices.find(unit_name);
        if (unit == site.devices.end()) continue;  // reported with the group
        const bool floating = std::any_of(
            unit->second.self_ips.begin(), unit->second.self_ips.end(), [&](const auto& entry) {
              return entry.second.floating && entry.second.address.address == address;
            });
        if (!floating) {
          problems.push_back({path, address.str() + " is not a floating self IP of device \"" +
                                        unit_name + "\"; the endpoint of failover group \"" + name +
                                        "\" moves with its active unit"});
        }
      }
      continue;
    }
    if (device == site.devices.end()) {
      std::vector<std::string> candidates = keys_of(site.devices);
      for (const auto& [group_name, unused] : site.failover_groups)
        candidates.push_back(group_name);
      const char* what = site.failover_groups.empty() ? "device" : "device or failover group";
      problems.push_back({path, unknown(what, name, candidates) +
                                    " (a peer that etherctl does not manage is written "
                                    "{\"address\": \"" +
                                    address.str() + "\", \"managed\": false})"});
      continue;
    }
    if (const FailoverGroup* pair = failover_group_of(site, device->second)) {
      problems.push_back({path, "device \"" + name + "\" is a unit of failover group \"" +
                                    pair->name +
                                    "\"; name the group: its endpoint is a floating "
                                    "self IP that moves with the active unit"});
      continue;
    }
    bool is_self_ip =
        std::any_of(device->second.self_ips.begin(), device->second.self_ips.end(),
                    [&](const auto& entry) { return entry.second.address.address == address; });
    if (!is_self_ip) {
      problems.push_back({path, address.str() + " is not a self IP of device \"" + name +
                                    "\"; a tunnel endpoint must be one of the device's self IPs"});
    }
  }
  if (unmanaged > 1) {
    problems.push_back({endpoints_path,
                        "both endpoints are unmanaged; a tunnel joins a device of this file to "
                        "its peer (one managed and one unmanaged endpoint, or two managed)"});
  }
  if (tunnel.ipsec) {
    // A pair's end of the tunnel is its group: the active unit holds the connection, with the
    // group's identity (docs/failover.md, "IPsec on a pair's tunnel").
    if (family == 6) {
      // The receive path checks the SA and reassembles ESP for IPv4 only (lib/datapath).
      problems.push_back({tunnel.ipsec->path,
                          "IPsec needs IPv4 endpoints; this tunnel's are IPv6 (not supported)"});
    }
    for (const auto& [device, id] : tunnel.ipsec->identities) {
      auto unit = site.devices.find(device);
      const FailoverGroup* pair =
          unit != site.devices.end() ? failover_group_of(site, unit->second) : nullptr;
      if (pair && tunnel.endpoints.count(pair->name)) {
        problems.push_back(
            {pointer_append(pointer_append(tunnel.ipsec->path, "identities"), device),
             "device \"" + device + "\" is a unit of failover group \"" + pair->name +
                 "\"; give the identity to the group: whichever unit is active uses it"});
        continue;
      }
      if (!tunnel.endpoints.count(device)) {
        std::vector<std::string> endpoints;
        for (const auto& [name, unused] : tunnel.endpoints) endpoints.push_back(name);
        problems.push_back(
            {pointer_append(pointer_append(tunnel.ipsec->path, "identities"), device),
             unknown("endpoint device", device, endpoints)});
      }
    }
  }
}

}  // namespace

void validate(const Site& site, Problems& problems) {
  for (const auto& [name, device] : site.devices) {
    if (!is_device_name(name)) {
      problems.push_back({device.path, "device name \"" + name + "\" " + kDeviceNameRule});
    }
    validate_device(site, device, problems);
    validate_pools(device, problems);
  }
  std::map<uint32_t, std::string> reqids;  // IPsec reqid -> tunnel
  for (const auto& [name, tunnel] : site.tunnels) {
    validate_tunnel(site, tunnel, problems);
    if (!tunnel.ipsec) continue;
    auto [it, inserted] = reqids.emplace(ipsec_reqid(name), name);
    if (!inserted) {
      problems.push_back({tunnel.ipsec->path, "tunnels \"" + it->second + "\" and \"" + name +
                                                  "\" would share IPsec reqid " +
                                                  std::to_string(it->first) + "; rename one"});
    }
  }
  validate_failover(site, problems);
}

bool is_device_name(const std::string& name) {
  return name.size() <= 63 && std::all_of(name.begin(), name.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
         });
}

}  // namespace etherctl::model
