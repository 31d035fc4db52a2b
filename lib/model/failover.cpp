#include "model/failover.hpp"

#include <algorithm>
#include <set>

#include "model/validate.hpp"

namespace etherctl::model {

using nlohmann::json;

FailoverGroup parse_failover_group(const std::string& name, const json& value,
                                   const std::string& path, Problems& problems) {
  FailoverGroup group;
  group.name = name;
  group.path = path;
  Fields fields(value, path, problems,
                {"devices", "vlan", "virtual_router_id", "advert_int", "preempt", "preempt_delay",
                 "unicast"});
  if (!fields.ok()) return group;
  if (const json* devices = fields.array("devices", true)) {
    for (size_t i = 0; i < devices->size(); ++i) {
      const json& device = (*devices)[i];
      if (!device.is_string()) {
        problems.push_back({pointer_append(fields.path_of("devices"), std::to_string(i)),
                            "must be a device name (a string), not " + json_type_name(device)});
        continue;
      }
      group.devices.push_back(device.get<std::string>());
    }
    if (devices->size() != 2) {
      fields.problem("devices",
                     "a failover group has exactly two devices (an active and a "
                     "standby unit), not " +
                         std::to_string(devices->size()));
    }
  }
  if (auto vlan = fields.string("vlan", true)) {
    group.vlan = *vlan;
    if (vlan->empty()) fields.problem("vlan", "must name a VLAN or VLAN group, not be empty");
  }
  if (auto id = fields.integer("virtual_router_id", true, 1, 255)) {
    group.virtual_router_id = static_cast<int>(*id);
  }
  // VRRPv3 counts the interval in centiseconds, 12 bits (RFC 5798 5.2.7).
  if (auto advert = fields.centiseconds("advert_int", 1, 4095)) group.advert_centiseconds = *advert;
  group.preempt = fields.boolean("preempt").value_or(true);
  if (auto delay = fields.integer("preempt_delay", false, 0, 1000)) {
    group.preempt_delay = static_cast<int>(*delay);
    if (!group.preempt && *delay > 0) {
      fields.problem("preempt_delay", "has no effect with \"preempt\": false");
    }
  }
  group.unicast = fields.boolean("unicast").value_or(false);
  return group;
}

std::optional<DeviceFailover> parse_device_failover(Fields& device, Problems& problems) {
  const json* value = device.object("failover", false);
  if (!value) return std::nullopt;
  DeviceFailover failover;
  failover.path = device.path_of("failover");
  Fields fields(*value, failover.path, problems, {"group", "priority"});
  if (!fields.ok()) return std::nullopt;
  if (auto group = fields.string("group", true)) {
    failover.group = *group;
    if (group->empty()) fields.problem("group", "must name a failover group, not be empty");
  }
  // 255 means "address owner" in VRRP: it would take over at once without an election.
  if (auto priority = fields.integer("priority", true, 1, 254)) {
    failover.priority = static_cast<int>(*priority);
  }
  return failover;
}

namespace {

template <typename Map>
std::vector<std::string> names_of(const Map& map) {
  std::vector<std::string> names;
  names.reserve(map.size());
  for (const auto& [name, unused] : map) names.push_back(name);
  return names;
}

json vlan_json(const Vlan& vlan) {
  // The parent interface may be called differently on each unit (eth0, ens3): not compared.
  return {{"tag", vlan.tag ? json(*vlan.tag) : json()},
          {"mtu", vlan.mtu ? json(*vlan.mtu) : json()}};
}

json vlan_group_json(const VlanGroup& group) {
  std::vector<std::string> members = group.members;
  std::sort(members.begin(), members.end());
  return {
      {"members", members}, {"mode", group.mode}, {"mtu", group.mtu ? json(*group.mtu) : json()}};
}

json floating_json(const SelfIp& self_ip) {
  return {{"address", self_ip.address.str()}, {"vlan", self_ip.vlan}};
}

json pool_json(const Pool& pool) {
  json members = json::object();
  for (const auto& [key, member] : pool.members) members[key] = {{"weight", member.weight}};
  json out = {{"address", pool.address.str()},
              {"port", pool.port},
              {"protocol", pool.protocol},
              {"scheduler", pool.scheduler},
              {"virtual_vlan", pool.virtual_vlan ? json(*pool.virtual_vlan) : json()},
              {"members", members}};
  if (pool.monitor) {
    out["monitor"] = {{"type", pool.monitor->type},
                      {"interval", pool.monitor->interval},
                      {"min_active_members", pool.monitor->min_active_members}};
  }
  return out;
}

std::map<std::string, const SelfIp*> floating_self_ips(const Device& device) {
  std::map<std::string, const SelfIp*> out;
  for (const auto& [name, self_ip] : device.self_ips) {
    if (self_ip.floating) out.emplace(name, &self_ip);
  }
  return out;
}

// What the units of a group must declare alike: `second` against `first`, problems at the
// second's objects (or at the second device when one is missing there: its collection may be
// absent from the file).
template <typename Map, typename ToJson>
void compare_shared(const Map& first, const Map& second, const std::string& what,
                    const std::string& second_path, const Device& reference,
                    const FailoverGroup& group, ToJson to_json, Problems& problems) {
  const std::string rule =
      "the units of failover group \"" + group.name + "\" declare the same " + what + "s";
  for (const auto& [name, object] : first) {
    auto other = second.find(name);
    if (other == second.end()) {
      problems.push_back({second_path, "lacks " + what + " \"" + name + "\" of device \"" +
                                           reference.name + "\" (" + rule + ")"});
    } else if (to_json(*object) != to_json(*other->second)) {
      problems.push_back(
          {other->second->path, "differs from " + what + " \"" + name + "\" of device \"" +
                                    reference.name + "\": " + to_json(*other->second).dump() +
                                    " against " + to_json(*object).dump() + " (" + rule + ")"});
    }
  }
  for (const auto& [name, object] : second) {
    if (!first.count(name)) {
      problems.push_back({object->path, what + " \"" + name + "\" is not declared by device \"" +
                                            reference.name + "\" (" + rule + ")"});
    }
  }
}

template <typename Map>
std::map<std::string, const typename Map::mapped_type*> pointers(const Map& map) {
  std::map<std::string, const typename Map::mapped_type*> out;
  for (const auto& [name, value] : map) out.emplace(name, &value);
  return out;
}

// A fixed (not floating) self IP of `device` on `vlan` of `family` (4 or 6), or nullptr.
const SelfIp* fixed_self_ip(const Device& device, const std::string& vlan, int family) {
  for (const auto& [name, self_ip] : device.self_ips) {
    if (!self_ip.floating && self_ip.vlan == vlan && self_ip.address.address.family == family) {
      return &self_ip;
    }
  }
  return nullptr;
}

void validate_group(const Site& site, const FailoverGroup& group,
                    std::map<std::string, std::string>& group_of_device,
                    std::map<int, std::string>& groups_by_id, Problems& problems) {
  if (!is_device_name(group.name)) {
    problems.push_back(
        {group.path, "failover group name \"" + group.name + "\" " + kDeviceNameRule});
  }
  if (site.devices.count(group.name)) {
    problems.push_back({group.path, "\"" + group.name +
                                        "\" is also a device; a tunnel endpoint names a device "
                                        "or a failover group, so they need different names"});
  }
  if (group.virtual_router_id > 0) {
    auto [it, inserted] = groups_by_id.emplace(group.virtual_router_id, group.name);
    if (!inserted) {
      problems.push_back({pointer_append(group.path, "virtual_router_id"),
                          std::to_string(group.virtual_router_id) +
                              " is also the virtual router id of failover group \"" + it->second +
                              "\""});
    }
  }
  std::vector<const Device*> units;
  const std::string devices_path = pointer_append(group.path, "devices");
  for (size_t i = 0; i < group.devices.size(); ++i) {
    const std::string& name = group.devices[i];
    const std::string path = pointer_append(devices_path, std::to_string(i));
    auto device = site.devices.find(name);
    if (device == site.devices.end()) {
      std::string message = "unknown device \"" + name + "\"";
      const std::string suggestion = closest_match(name, names_of(site.devices));
      if (!suggestion.empty()) message += "; did you mean \"" + suggestion + "\"?";
      problems.push_back({path, message});
      continue;
    }
    auto [it, inserted] = group_of_device.emplace(name, group.name);
    if (!inserted) {
      problems.push_back({path, "\"" + name + "\" is " +
                                    (it->second == group.name
                                         ? std::string("listed twice")
                                         : "already a unit of failover group \"" + it->second +
                                               "\"; a device is in one group at most")});
      continue;
    }
    const Device& unit = device->second;
    if (!unit.failover) {
      problems.push_back({unit.path, "device \"" + name + "\" is a unit of failover group \"" +
                                         group.name + "\" (" + path +
                                         "): it needs \"failover\": {\"group\": \"" + group.name +
                                         "\", \"priority\": 1..254}"});
    } else if (!unit.failover->group.empty() && unit.failover->group != group.name) {
      problems.push_back({pointer_append(unit.failover->path, "group"),
                          "is \"" + unit.failover->group + "\", but failover group \"" +
                              group.name + "\" lists this device (" + path + ")"});
    }
    units.push_back(&unit);
  }
  // The VLAN the units elect on: both have it, and send VRRP from a fixed IPv4 self IP on it.
  if (!group.vlan.empty()) {
    for (const Device* unit : units) {
      const std::string vlan_path = pointer_append(group.path, "vlan");
      if (!unit->vlans.count(group.vlan) && !unit->vlan_groups.count(group.vlan)) {
        problems.push_back({vlan_path, "device \"" + unit->name +
                                           "\" has no VLAN or VLAN group \"" + group.vlan + "\""});
      } else if (!fixed_self_ip(*unit, group.vlan, 4)) {
        problems.push_back({vlan_path, "device \"" + unit->name +
                                           "\" has no fixed (not floating) IPv4 self IP on \"" +
                                           group.vlan +
                                           "\"; VRRP advertisements are sent from "
                                           "it"});
      }
    }
  }
  if (units.size() != 2) return;
  const Device& first = *units[0];
  const Device& second = *units[1];
  if (first.failover && second.failover && first.failover->group == group.name &&
      second.failover->group == group.name && first.failover->priority > 0 &&
      first.failover->priority == second.failover->priority) {
    problems.push_back({pointer_append(second.failover->path, "priority"),
                        "is " + std::to_string(second.failover->priority) +
                            ", the priority of device \"" + first.name +
                            "\" too; the units of a failover group need different priorities"});
  }
  compare_shared(pointers(first.vlans), pointers(second.vlans), "VLAN", second.path, first, group,
                 vlan_json, problems);
  compare_shared(pointers(first.vlan_groups), pointers(second.vlan_groups), "VLAN group",
                 second.path, first, group, vlan_group_json, problems);
  compare_shared(floating_self_ips(first), floating_self_ips(second), "floating self IP",
                 second.path, first, group, floating_json, problems);
  compare_shared(pointers(first.pools), pointers(second.pools), "pool", second.path, first, group,
                 pool_json, problems);
}

// A floating self IP belongs to a unit of a group, and sits in a subnet where the unit has a
// fixed self IP on the same VLAN: the standby keeps that one, and the routes through it.
void validate_floating(const Device& device, Problems& problems) {
  for (const auto& entry : device.self_ips) {
    const SelfIp& self_ip = entry.second;
    if (!self_ip.floating) continue;
    if (!device.failover) {
      problems.push_back({pointer_append(self_ip.path, "floating"),
                          "only a unit of a failover group has floating self IPs (device \"" +
                              device.name + "\" has no \"failover\")"});
      continue;
    }
    if (self_ip.address.address.family == 0) continue;  // reported by the parser
    const IpPrefix network = self_ip.address.network();
    const bool covered =
        std::any_of(device.self_ips.begin(), device.self_ips.end(), [&](const auto& other) {
          const SelfIp& fixed = other.second;
          return !fixed.floating && fixed.vlan == self_ip.vlan &&
                 fixed.address.address.family == self_ip.address.address.family &&
                 fixed.address.length == self_ip.address.length &&
                 fixed.address.network() == network;
        });
    if (!covered) {
      problems.push_back(
          {self_ip.path, "floating self IP " + self_ip.address.str() +
                             " needs a fixed (not floating) self IP of device \"" + device.name +
                             "\" in " + network.str() + " on \"" + self_ip.vlan +
                             "\": the standby unit keeps that one, and the routes through it"});
    }
  }
}

}  // namespace

void validate_failover(const Site& site, Problems& problems) {
  std::map<std::string, std::string> group_of_device;
  std::map<int, std::string> groups_by_id;
  for (const auto& [name, group] : site.failover_groups) {
    validate_group(site, group, group_of_device, groups_by_id, problems);
  }
  for (const auto& [name, device] : site.devices) {
    validate_floating(device, problems);
    if (!device.failover || device.failover->group.empty()) continue;
    auto group = site.failover_groups.find(device.failover->group);
    if (group == site.failover_groups.end()) {
      std::string message = "unknown failover group \"" + device.failover->group + "\"";
      const std::string suggestion =
          closest_match(device.failover->group, names_of(site.failover_groups));
      if (!suggestion.empty()) message += "; did you mean \"" + suggestion + "\"?";
      problems.push_back({pointer_append(device.failover->path, "group"), message});
    } else if (std::find(group->second.devices.begin(), group->second.devices.end(), device.name) ==
               group->second.devices.end()) {
      problems.push_back({pointer_append(device.failover->path, "group"),
                          "failover group \"" + group->first + "\" does not list device \"" +
                              device.name + "\" in its \"devices\""});
    }
  }
}

json shared_configuration(const Site& site, const FailoverGroup& group) {
  json out = {{"group", group.name},
              {"devices", group.devices},
              {"vlan", group.vlan},
              {"virtual_router_id", group.virtual_router_id},
              {"advert_centiseconds", group.advert_centiseconds},
              {"preempt", group.preempt},
              {"preempt_delay", group.preempt_delay},
              {"unicast", group.unicast}};
  const Device* unit = nullptr;
  for (const auto& name : group.devices) {
    auto device = site.devices.find(name);
    if (device != site.devices.end()) {
      unit = &device->second;
      out["priorities"][name] = device->second.failover ? device->second.failover->priority : 0;
    }
  }
  if (!unit) return out;
  for (const auto& [name, vlan] : unit->vlans) out["vlans"][name] = vlan_json(vlan);
  for (const auto& [name, g] : unit->vlan_groups) out["vlan_groups"][name] = vlan_group_json(g);
  for (const auto& [name, self_ip] : floating_self_ips(*unit)) {
    out["floating_self_ips"][name] = floating_json(*self_ip);
  }
  for (const auto& [name, pool] : unit->pools) out["pools"][name] = pool_json(pool);
  for (const auto& [name, tunnel] : site.tunnels) {
    if (!tunnel.endpoints.count(group.name)) continue;
    json endpoints = json::object();
    for (const auto& [peer, endpoint] : tunnel.endpoints) {
      endpoints[peer] = {{"address", endpoint.address.str()}, {"managed", endpoint.managed}};
    }
    out["tunnels"][name] = {{"endpoints", endpoints},
                            {"mtu", tunnel.mtu ? json(*tunnel.mtu) : json()},
                            {"accept_reversed_header", tunnel.accept_reversed_header},
                            {"fast_path", tunnel.fast_path},
                            {"clamp_tcp_mss", tunnel.clamp_tcp_mss}};
  }
  return out;
}

const FailoverGroup* failover_group_of(const Site& site, const Device& device) {
  if (!device.failover) return nullptr;
  auto group = site.failover_groups.find(device.failover->group);
  return group == site.failover_groups.end() ? nullptr : &group->second;
}

const Device* failover_peer(const Site& site, const Device& device) {
  const FailoverGroup* group = failover_group_of(site, device);
  if (!group) return nullptr;
  for (const auto& name : group->devices) {
    if (name == device.name) continue;
    auto peer = site.devices.find(name);
    if (peer != site.devices.end()) return &peer->second;
  }
  return nullptr;
}

const std::string& endpoint_name(const Site& site, const Device& device) {
  const FailoverGroup* group = failover_group_of(site, device);
  return group ? group->name : device.name;
}

}  // namespace etherctl::model
