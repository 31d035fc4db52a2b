// Kind "route": unicast routes of the main table, IPv4 and IPv6. Ours carry rtm_protocol =
// kEtherctlProtocol, which the kernel keeps with the route (and `ip route` shows as "proto 231").
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <stdexcept>
#include <unordered_map>

#include "kernel/detail.hpp"
#include "kernel/inet.hpp"

namespace etherctl::kernel {

namespace {

plan::Objects observe(const Snapshot& snapshot, const Ownership&) {
  const auto by_index = detail::links_by_index(snapshot);
  plan::Objects objects;
  objects.reserve(snapshot.routes.size());
  // The key is the destination alone, but the kernel may hold several routes to one
  // destination (IPv6 fe80::/64 on every link, equal prefixes with different metrics). Keep
  // one object per key: ours if there is one, else the lowest metric (the route in use).
  std::unordered_map<std::string, size_t> position;
  position.reserve(snapshot.routes.size());
  std::vector<uint32_t> metric;
  metric.reserve(snapshot.routes.size());
  for (const RouteInfo& route : snapshot.routes) {
    const bool owned = route.protocol == kEtherctlProtocol;
    auto [it, inserted] = position.try_emplace(route.destination, objects.size());
    if (!inserted) {
      const plan::Object& kept = objects[it->second];
      const bool better = owned ? !kept.owned || route.priority < metric[it->second]
                                : !kept.owned && route.priority < metric[it->second];
      if (!better) continue;
    } else {
      objects.emplace_back();
      metric.push_back(0);
    }
    plan::Object& object = objects[it->second];
    metric[it->second] = route.priority;
    object = plan::Object{};
    object.kind = plan::kRoute;
    object.key = route.destination;
    object.name = route.destination;
    object.owned = owned;
    object.attrs["destination"] = route.destination;
    object.attrs["family"] = route.family;
    object.attrs["metric"] = route.priority;
    if (!route.gateway.empty()) object.attrs["gateway"] = route.gateway;
    if (auto link = by_index.find(route.oif); route.oif && link != by_index.end()) {
      object.attrs["interface"] = link->second->name;
    }
  }
  return objects;
}

struct RouteSpec {
  IpPrefix destination;
  std::optional<IpPrefix> gateway;
};

RouteSpec parse(const plan::Object& object, std::string_view operation) {
  RouteSpec spec;
  const std::string text = detail::require_string(object, "destination", operation);
  auto destination = parse_prefix(text);
  if (!destination) {
    throw std::invalid_argument(detail::what(operation, object) + ": \"" + text +
                                "\" is not a prefix");
  }
  // The kernel rejects IPv4 destinations with host bits set; the key is the network anyway.
  spec.destination = network_of(*destination);
  if (auto gateway = detail::string_attr(object, "gateway"); gateway && !gateway->empty()) {
    spec.gateway = parse_address(*gateway);
    if (!spec.gateway || spec.gateway->family != spec.destination.family) {
      throw std::invalid_argument(detail::what(operation, object) + ": gateway \"" + *gateway +
                                  "\" is not an address of the destination's family");
    }
  }
  return spec;
}

Message route_message(uint16_t type, uint16_t flags, const RouteSpec& spec) {
  Message message(type, flags);
  auto* rtm = message.put_header<rtmsg>();
  rtm->rtm_family = static_cast<uint8_t>(spec.destination.family);
  rtm->rtm_dst_len = static_cast<uint8_t>(spec.destination.length);
  rtm->rtm_table = RT_TABLE_MAIN;
  rtm->rtm_type = RTN_UNICAST;
  if (spec.destination.length > 0) {
    message.put(RTA_DST, spec.destination.bytes.data(), spec.destination.size());
  }
  if (spec.gateway) message.put(RTA_GATEWAY, spec.gateway->bytes.data(), spec.gateway->size());
  return message;
}

// Create and replace send the whole route, stamped as ours.
void write_route(Netlink& netlink, const plan::Object& desired, uint16_t flags,
                 std::optional<uint32_t> metric, std::string_view operation) {
  const std::string what = detail::what(operation, desired);
  const RouteSpec spec = parse(desired, operation);
  Message message = route_message(RTM_NEWROUTE, flags, spec);
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_get_payload(message.header()));
  rtm->rtm_protocol = kEtherctlProtocol;
  // A route without a gateway reaches its destination directly on the link.
  rtm->rtm_scope = spec.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
  if (auto interface = detail::string_attr(desired, "interface");
      interface && !interface->empty()) {
    message.put_u32(RTA_OIF, static_cast<uint32_t>(detail::ifindex_for(netlink, *interface, what)));
  }
  if (metric) message.put_u32(RTA_PRIORITY, *metric);
  netlink.request(message, what);
}

std::optional<uint32_t> metric_of(const plan::Object& object) {
  if (auto metric = detail::int_attr(object, "metric")) return static_cast<uint32_t>(*metric);
  return std::nullopt;
}

void create(Netlink& netlink, const plan::Object& desired, const Ownership&) {
  write_route(netlink, desired, NLM_F_CREATE | NLM_F_EXCL, metric_of(desired), "create");
}

// NLM_F_REPLACE swaps the route's nexthop atomically (no window without a route). The kernel
// finds the route to replace by destination and metric, so the observed metric is sent.
void modify(Netlink& netlink, const plan::Object& desired, const plan::Object& observed) {
  write_route(netlink, desired, NLM_F_REPLACE, metric_of(observed), "modify");
}

void remove(Netlink& netlink, const plan::Object& observed) {
  const std::string what = detail::what("remove", observed);
  Message message = route_message(RTM_DELROUTE, 0, parse(observed, "remove"));
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_get_payload(message.header()));
  // Scope "nowhere" matches any scope; the protocol narrows the match to our route when the
  // destination has several.
  rtm->rtm_scope = RT_SCOPE_NOWHERE;
  rtm->rtm_protocol = observed.owned ? kEtherctlProtocol : 0;
  if (auto metric = metric_of(observed)) message.put_u32(RTA_PRIORITY, *metric);
  netlink.request(message, what);
}

}  // namespace

KindOps route_kind() { return {plan::kRoute, observe, create, modify, remove}; }

}  // namespace etherctl::kernel
