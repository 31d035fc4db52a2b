// Kind "vlan": 802.1Q devices, and every other non-bridge link (physical NICs, veths, ...) so
// that the site file can adopt an existing interface. Owned links of type veth are tunnel
// interfaces and belong to the "tunnel" kind (lib/datapath/).
#include <linux/if_link.h>

#include <stdexcept>

#include "kernel/detail.hpp"

namespace etherctl::kernel {

namespace {

plan::Objects observe(const Snapshot& snapshot, const Ownership& ownership) {
  const auto by_index = detail::links_by_index(snapshot);
  plan::Objects objects;
  objects.reserve(snapshot.links.size());
  for (const LinkInfo& link : snapshot.links) {
    if (link.type == "bridge") continue;  // kind "vlan_group"
    const bool owned = ownership.owns_link(link.alias);
    if (owned && link.type == "veth") continue;  // kind "tunnel"
    plan::Object& object = objects.emplace_back();
    object.kind = plan::kVlan;
    object.key = link.name;
    object.name = link.name;
    object.owned = owned;
    detail::put_link_attrs(object, link);
    if (link.type == "vlan") {
      object.attrs["tag"] = link.vlan_id;
      auto parent = by_index.find(link.parent_ifindex);
      if (parent != by_index.end()) object.attrs["interface"] = parent->second->name;
    }
  }
  return objects;
}

void create(Netlink& netlink, const plan::Object& desired, const Ownership& ownership) {
  const std::string what = detail::what("create", desired);
  // An adopted interface exists outside etherctl; creating it means the planner lost track.
  if (desired.adopted) throw std::logic_error(what + ": adopted interfaces are never created");
  const std::string parent = detail::require_string(desired, "interface", "create");
  const auto tag = detail::int_attr(desired, "tag");
  if (!tag) throw std::invalid_argument(what + ": attribute \"tag\" is missing");
  const int parent_index = detail::ifindex_for(netlink, parent, what);

  Message message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  auto* ifi = message.put_header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  message.put_str(IFLA_IFNAME, desired.key);
  message.put_u32(IFLA_LINK, static_cast<uint32_t>(parent_index));
  if (auto mtu = detail::int_attr(desired, "mtu")) {
    message.put_u32(IFLA_MTU, static_cast<uint32_t>(*mtu));
  }
  if (auto up = detail::bool_attr(desired, "up")) detail::put_up(ifi, *up);
  message.put_str(IFLA_IFALIAS, ownership.link_alias());
  nlattr* linkinfo = message.nest_start(IFLA_LINKINFO);
  message.put_str(IFLA_INFO_KIND, "vlan");
  nlattr* data = message.nest_start(IFLA_INFO_DATA);
  message.put_u16(IFLA_VLAN_ID, static_cast<uint16_t>(*tag));
  message.nest_end(data);
  message.nest_end(linkinfo);
  try {
    netlink.request(message, what);
  } catch (const KernelError& e) {
    detail::rethrow_create_error(e, "vlan", what);
  }
  detail::ensure_alias(netlink, desired.key, ownership.link_alias(), what);
}

void modify(Netlink& netlink, const plan::Object& desired, const plan::Object& observed) {
  // Parent and tag are fixed at creation: a change is a delete and create, which the planner
  // must schedule itself (it owns ordering against ports and addresses).
  if (!desired.adopted) {
    for (const char* fixed : {"interface", "tag"}) {
      auto wanted = desired.attrs.find(fixed);
      auto seen = observed.attrs.find(fixed);
      if (wanted != desired.attrs.end() && (seen == observed.attrs.end() || *wanted != *seen)) {
        throw std::logic_error(detail::what("modify", desired) + ": \"" + fixed +
                               "\" cannot change in place; replace the VLAN");
      }
    }
  }
  detail::modify_link(netlink, desired, observed);
}

void remove(Netlink& netlink, const plan::Object& observed) {
  detail::remove_link(netlink, observed);
}

}  // namespace

KindOps vlan_kind() { return {plan::kVlan, observe, create, modify, remove, detail::abandon_link}; }

}  // namespace etherctl::kernel
