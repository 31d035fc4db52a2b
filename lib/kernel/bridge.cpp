// Kind "vlan_group": every Linux bridge. etherctl's bridges run without STP and forward at
// once (forward delay 0): the site file, not STP, guarantees a loop-free topology, and a port
// that waits 15 s in "learning" would black-hole traffic after every apply.
#include <linux/if_link.h>

#include "kernel/detail.hpp"

namespace etherctl::kernel {

namespace {

plan::Objects observe(const Snapshot& snapshot, const Ownership& ownership) {
  plan::Objects objects;
  for (const LinkInfo& link : snapshot.links) {
    if (link.type != "bridge") continue;
    plan::Object& object = objects.emplace_back();
    object.kind = plan::kVlanGroup;
    object.key = link.name;
    object.name = link.name;
    object.owned = ownership.owns_link(link.alias);
    detail::put_link_attrs(object, link);
  }
  return objects;
}

void create(Netlink& netlink, const plan::Object& desired, const Ownership& ownership) {
  const std::string what = detail::what("create", desired);
  Message message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  auto* ifi = message.put_header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  message.put_str(IFLA_IFNAME, desired.key);
  // Without an explicit MTU the bridge follows its smallest port, which is usually right. An
  // explicit MTU must stick, and only a change through ndo_change_mtu makes it stick (the
  // bridge's "MTU set by user" flag): an MTU given at creation, or set again to the value it
  // already has, is overridden by the ports' as soon as one joins (tested on 6.18). So the
  // bridge is created one below the wanted MTU (one above at the minimum, 68) and the second
  // request, which sets the ownership alias anyway, moves it to the wanted value.
  const auto mtu = detail::int_attr(desired, "mtu");
  if (mtu) message.put_u32(IFLA_MTU, static_cast<uint32_t>(*mtu > 68 ? *mtu - 1 : *mtu + 1));
  if (auto up = detail::bool_attr(desired, "up")) detail::put_up(ifi, *up);
  message.put_str(IFLA_IFALIAS, ownership.link_alias());
  nlattr* linkinfo = message.nest_start(IFLA_LINKINFO);
  message.put_str(IFLA_INFO_KIND, "bridge");
  nlattr* data = message.nest_start(IFLA_INFO_DATA);
  message.put_u32(IFLA_BR_STP_STATE, 0);
  message.put_u32(IFLA_BR_FORWARD_DELAY, 0);
  message.nest_end(data);
  message.nest_end(linkinfo);
  try {
    netlink.request(message, what);
  } catch (const KernelError& e) {
    detail::rethrow_create_error(e, "bridge", what);
  }
  detail::ensure_alias(netlink, desired.key, ownership.link_alias(), what, mtu);
}

// MTU and state change in place: the bridge keeps its ifindex, ports and FDB.
void modify(Netlink& netlink, const plan::Object& desired, const plan::Object& observed) {
  detail::modify_link(netlink, desired, observed);
}

void remove(Netlink& netlink, const plan::Object& observed) {
  detail::remove_link(netlink, observed);
}

}  // namespace

KindOps bridge_kind() {
  return {plan::kVlanGroup, observe, create, modify, remove, detail::abandon_link};
}

}  // namespace etherctl::kernel
