// Pools: "pools": {"web": {"virtual": {...}, "members": {"addr:port": {...}}, "monitor": {...}}}.
#include "model/pools.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "model/fields.hpp"

namespace etherctl::model {

namespace {

using nlohmann::json;

const std::vector<std::string> kProtocols = {"tcp", "udp"};
const std::vector<std::string> kMonitorTypes = {"virtual_location"};

std::string family_name(const IpAddress& address) { return address.family == 4 ? "IPv4" : "IPv6"; }

std::optional<int> parse_port(const std::string& text) {
  if (text.empty() || text.size() > 5 || text.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  int port = std::stoi(text);
  if (port < 1 || port > 65535) return std::nullopt;
  return port;
}

void parse_virtual(Fields& parent, Pool& pool, Problems& problems) {
  const json* value = parent.object("virtual", true);
  if (!value) return;
  Fields fields(*value, parent.path_of("virtual"), problems,
                {"address", "port", "protocol", "scheduler", "vlan"});
  if (!fields.ok()) return;
  if (auto text = fields.string("address", true)) {
    if (auto address = IpAddress::parse(*text)) {
      pool.address = *address;
    } else {
      fields.problem("address", "\"" + *text + "\" is not an IPv4 or IPv6 address");
    }
  }
  if (auto port = fields.integer("port", true, 1, 65535)) pool.port = static_cast<int>(*port);
  if (auto vlan = fields.string("vlan", false)) {
    if (vlan->empty()) {
      fields.problem("vlan", "must name a VLAN or VLAN group");
    } else {
      pool.virtual_vlan = *vlan;
    }
  }
  if (auto protocol = fields.string("protocol", false)) {
    if (std::find(kProtocols.begin(), kProtocols.end(), *protocol) == kProtocols.end()) {
      std::string suggestion = closest_match(*protocol, kProtocols);
      fields.problem("protocol",
                     "unknown protocol \"" + *protocol + "\"" +
                         (suggestion.empty() ? std::string(" (use \"tcp\" or \"udp\")")
                                             : "; did you mean \"" + suggestion + "\"?"));
    } else {
      pool.protocol = *protocol;
    }
  }
  if (auto scheduler = fields.string("scheduler", false)) {
    const auto& known = pool_schedulers();
    if (std::find(known.begin(), known.end(), *scheduler) == known.end()) {
      std::string message = "unknown IPVS scheduler \"" + *scheduler + "\"";
      std::string suggestion = closest_match(*scheduler, known);
      if (!suggestion.empty()) {
        message += "; did you mean \"" + suggestion + "\"?";
      } else {
        message += " (known:";
        for (const auto& name : known) message += " " + name;
        message += ")";
      }
      fields.problem("scheduler", message);
    } else {
      pool.scheduler = *scheduler;
    }
  }
}

void parse_members(Fields& parent, Pool& pool, Problems& problems) {
  const json* members = parent.object("members", true);
  if (!members) return;
  const std::string members_path = parent.path_of("members");
  for (const auto& [key, value] : members->items()) {
    const std::string path = pointer_append(members_path, key);
    PoolMember member{key, path, {}, 0, 1};
    std::string error;
    if (auto endpoint = parse_endpoint(key, &error)) {
      member.address = endpoint->address;
      member.port = endpoint->port;
    } else {
      problems.push_back({path, error});
    }
    Fields fields(value, path, problems, {"weight"});
    if (fields.ok()) {
      if (auto weight = fields.integer("weight", false, 0, 65535)) {
        member.weight = static_cast<int>(*weight);
      }
    }
    pool.members.emplace(key, std::move(member));
  }
}

void parse_monitor(Fields& parent, Pool& pool, Problems& problems) {
  const json* value = parent.object("monitor", false);
  if (!value) return;
  Fields fields(*value, parent.path_of("monitor"), problems,
                {"type", "interval", "min_active_members"});
  if (!fields.ok()) return;
  Pool::Monitor monitor;
  if (auto type = fields.string("type", true)) {
    if (std::find(kMonitorTypes.begin(), kMonitorTypes.end(), *type) == kMonitorTypes.end()) {
      std::string suggestion = closest_match(*type, kMonitorTypes);
      fields.problem("type",
                     "unknown monitor type \"" + *type + "\"" +
                         (suggestion.empty() ? std::string(" (etherctl has \"virtual_location\")")
                                             : "; did you mean \"" + suggestion + "\"?"));
    }
    monitor.type = *type;
  }
  if (auto interval = fields.integer("interval", false, 1, 86400)) {
    monitor.interval = static_cast<int>(*interval);
  }
  if (auto minimum = fields.integer("min_active_members", false, 0, 65535)) {
    monitor.min_active_members = static_cast<int>(*minimum);
  }
  pool.monitor = monitor;
}

}  // namespace

const std::vector<std::string>& pool_schedulers() {
  static const std::vector<std::string> schedulers = {"rr",    "wrr", "lc", "wlc", "lblc",
                                                      "lblcr", "dh",  "sh", "sed", "nq",
                                                      "fo",    "ovf", "mh", "twos"};
  return schedulers;
}

std::optional<Endpoint> parse_endpoint(const std::string& text, std::string* error) {
  const std::string format =
      "member \"" + text + "\" must be \"address:port\" (IPv6 as \"[address]:port\")";
  std::string address_text, port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      *error = format;
      return std::nullopt;
    }
    address_text = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    auto address = IpAddress::parse(address_text);
    if (!address || address->family != 6) {
      *error = "member \"" + text + "\": \"" + address_text + "\" is not an IPv6 address";
      return std::nullopt;
    }
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) {
      *error = format;
      return std::nullopt;
    }
    address_text = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (address_text.find(':') != std::string::npos) {
      *error = "member \"" + text + "\": write an IPv6 member as \"[address]:port\"";
      return std::nullopt;
    }
  }
  auto address = IpAddress::parse(address_text);
  if (!address) {
    *error = "member \"" + text + "\": \"" + address_text + "\" is not an IPv4 or IPv6 address";
    return std::nullopt;
  }
  auto port = parse_port(port_text);
  if (!port) {
    *error = "member \"" + text + "\": port \"" + port_text + "\" is not a number in 1..65535";
    return std::nullopt;
  }
  return Endpoint{*address, *port};
}

std::string endpoint_string(const IpAddress& address, int port) {
  // Named, not a temporary: GCC 12 at -O3 misjudges `"literal" + std::string&&` (a false
  // -Wrestrict in the insert at the front).
  const std::string text = address.str();
  const std::string port_text = std::to_string(port);
  return address.family == 6 ? "[" + text + "]:" + port_text : text + ":" + port_text;
}

Pool parse_pool(const std::string& name, const json& value, const std::string& path,
                Problems& problems) {
  Pool pool;
  pool.name = name;
  pool.path = path;
  Fields fields(value, path, problems, {"virtual", "members", "monitor"});
  if (!fields.ok()) return pool;
  parse_virtual(fields, pool, problems);
  parse_members(fields, pool, problems);
  parse_monitor(fields, pool, problems);
  return pool;
}

VirtualAddressPlacement place_virtual_address(const Device& device, const Pool& pool) {
  VirtualAddressPlacement placement;
  std::set<std::string> holding;  // VLANs (or groups) of the self IPs whose subnet holds it
  for (const auto& [name, self_ip] : device.self_ips) {
    if (self_ip.address.address == pool.address) {
      placement.vlan = self_ip.vlan;
      placement.is_self_ip = true;
      return placement;
    }
    if (self_ip.address.contains(pool.address)) holding.insert(self_ip.vlan);
  }
  const std::string address = pool.address.str();
  if (pool.virtual_vlan) {
    placement.vlan = *pool.virtual_vlan;
  } else if (holding.size() == 1) {
    placement.vlan = *holding.begin();
  } else if (holding.empty()) {
    placement.error = address +
                      " is no self IP and in no self IP's subnet, so etherctl cannot tell on "
                      "which VLAN the clients reach it (IPVS sees only packets for local "
                      "addresses): add a self IP in its subnet, or name the VLAN or VLAN group "
                      "that faces the clients with \"virtual\": {\"vlan\": ...}";
  } else {
    std::string vlans;
    for (const auto& vlan : holding) vlans += (vlans.empty() ? "\"" : ", \"") + vlan + "\"";
    placement.error = address + " is in the subnets of self IPs on " + vlans +
                      ": name the one that faces the clients with \"virtual\": {\"vlan\": ...}";
  }
  return placement;
}

void validate_pools(const Device& device, Problems& problems) {
  // (protocol, address, port) -> pointer of the first pool that serves it
  std::map<std::tuple<std::string, IpAddress, int>, std::string> virtuals;
  for (const auto& [name, pool] : device.pools) {
    const std::string virtual_path = pointer_append(pool.path, "virtual");
    if (pool.address.family != 0 && pool.port != 0) {
      auto [it, inserted] =
          virtuals.emplace(std::make_tuple(pool.protocol, pool.address, pool.port), pool.path);
      if (!inserted) {
        problems.push_back({virtual_path, pool.protocol + " " +
                                              endpoint_string(pool.address, pool.port) +
                                              " is also the virtual server of " + it->second});
      }
    }
    std::map<std::pair<IpAddress, int>, std::string> seen;  // canonical member -> file key
    for (const auto& [key, member] : pool.members) {
      if (member.address.family == 0) continue;  // reported by the parser
      if (pool.address.family != 0 && member.address.family != pool.address.family) {
        problems.push_back({member.path, "member " + member.address.str() + " is " +
                                             family_name(member.address) +
                                             " but the virtual address " + pool.address.str() +
                                             " is " + family_name(pool.address) +
                                             "; a pool's members and virtual address must be "
                                             "of one address family"});
      }
      auto [it, inserted] = seen.emplace(std::make_pair(member.address, member.port), key);
      if (!inserted) {
        problems.push_back(
            {member.path, "member \"" + key + "\" is the same server as \"" + it->second + "\""});
      }
    }
    if (pool.monitor && !pool.members.empty() &&
        pool.monitor->min_active_members > static_cast<int>(pool.members.size())) {
      problems.push_back(
          {pointer_append(pointer_append(pool.path, "monitor"), "min_active_members"),
           std::to_string(pool.monitor->min_active_members) + " is more than the pool's " +
               std::to_string(pool.members.size()) + " members"});
    }
  }
}

}  // namespace etherctl::model
