#include "location/location.hpp"

#include <algorithm>
#include <cctype>

namespace etherctl::location {

namespace {

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// The VLAN group (or plain VLAN) whose self IP subnet holds `member`: the longest prefix wins.
const model::SelfIp* subnet_of(const model::Device& device, const model::IpAddress& member) {
  const model::SelfIp* best = nullptr;
  for (const auto& [name, self_ip] : device.self_ips) {
    if (!self_ip.address.contains(member)) continue;
    if (!best || self_ip.address.length > best->address.length) best = &self_ip;
  }
  return best;
}

// Tunnel names of `device` (the bridge ports that lead to the other data center).
bool is_tunnel_port(const model::Site& site, const model::Device& device, const std::string& port) {
  auto tunnel = site.tunnels.find(port);
  return tunnel != site.tunnels.end() && tunnel->second.endpoints.count(device.name) > 0;
}

}  // namespace

std::string to_string(Location location) {
  switch (location) {
    case Location::Local:
      return "local";
    case Location::Remote:
      return "remote";
    case Location::Unknown:
      return "unknown";
  }
  return "unknown";
}

MemberLocation locate(const model::Site& site, const model::Device& device,
                      const model::IpAddress& member, const Observation& observation) {
  MemberLocation result;
  const model::SelfIp* subnet = subnet_of(device, member);
  if (!subnet) {
    result.reason = "no self IP subnet of device \"" + device.name + "\" holds " + member.str();
    return result;
  }
  if (!device.vlan_groups.count(subnet->vlan)) {
    // A VLAN that is not stretched: nothing of it is behind a tunnel.
    result.location = Location::Local;
    result.reason = "on VLAN \"" + subnet->vlan + "\", which is not in a VLAN group";
    return result;
  }
  result.group = subnet->vlan;

  const Neighbour* neighbour = nullptr;
  for (const auto& entry : observation.neighbours) {
    if (entry.interface == result.group && entry.address == member) neighbour = &entry;
  }
  if (!neighbour || neighbour->mac.empty()) {
    result.resolve = true;
    result.reason = "no neighbour entry for " + member.str() + " on \"" + result.group + "\"";
    return result;
  }
  result.mac = lower(neighbour->mac);
  result.resolve = !neighbour->usable;

  const FdbEntry* fdb = nullptr;
  for (const auto& entry : observation.fdb) {
    if (entry.bridge == result.group && lower(entry.mac) == result.mac) fdb = &entry;
  }
  if (!fdb) {
    result.reason =
        "MAC " + result.mac + " is not in the forwarding database of \"" + result.group + "\"";
    return result;
  }
  result.port = fdb->port;
  if (is_tunnel_port(site, device, fdb->port)) {
    result.location = Location::Remote;
    result.reason = "MAC " + result.mac + " was learned on tunnel \"" + fdb->port + "\"";
  } else {
    result.location = Location::Local;
    result.reason = "MAC " + result.mac + " was learned on port \"" + fdb->port + "\"";
  }
  return result;
}

std::vector<int> effective_weights(const std::vector<WeightedMember>& members,
                                   int min_active_members) {
  const auto local_active = std::count_if(members.begin(), members.end(), [](const auto& m) {
    return m.location == Location::Local && m.configured > 0;
  });
  const bool quiesce_remote = local_active >= min_active_members;
  std::vector<int> weights;
  weights.reserve(members.size());
  for (const auto& member : members) {
    weights.push_back(member.location == Location::Remote && quiesce_remote ? 0
                                                                            : member.configured);
  }
  return weights;
}

std::vector<MemberAssessment> assess_pool(const model::Site& site, const model::Device& device,
                                          const model::Pool& pool, const Observation& observation) {
  std::vector<MemberAssessment> members;
  std::vector<WeightedMember> weighted;
  for (const auto& [key, member] : pool.members) {
    MemberAssessment& assessed = members.emplace_back();
    assessed.key = key;
    assessed.where = locate(site, device, member.address, observation);
    assessed.configured = member.weight;
    weighted.push_back({member.weight, assessed.where.location});
  }
  if (!pool.monitor) {
    for (auto& member : members) member.effective = member.configured;
    return members;
  }
  const std::vector<int> weights = effective_weights(weighted, pool.monitor->min_active_members);
  for (size_t i = 0; i < members.size(); ++i) members[i].effective = weights[i];
  return members;
}

}  // namespace etherctl::location
