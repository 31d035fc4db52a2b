// Kind "port": membership of a link in a bridge. The key "<bridge>/<link>" says everything, so
// there is nothing to modify. A port is ours when its link carries our alias (the links
// etherctl creates); ports of adopted interfaces therefore show as foreign.
//
// Attribute "flush_fdb" (desired only): when the port joins, the bridge forgets the MACs it
// learned (dynamic entries). A failover unit's tunnel port joins when the unit becomes active;
// while it was standby its bridge learned the other data center's MACs on its server port, and
// would keep dropping frames for them there.
#include <linux/if_link.h>

#include "kernel/detail.hpp"

namespace etherctl::kernel {

namespace {

plan::Objects observe(const Snapshot& snapshot, const Ownership& ownership) {
  const auto by_index = detail::links_by_index(snapshot);
  plan::Objects objects;
  for (const LinkInfo& link : snapshot.links) {
    if (link.master_ifindex == 0) continue;
    auto master = by_index.find(link.master_ifindex);
    // Bonds and VRFs are masters too; only bridge membership is a port.
    if (master == by_index.end() || master->second->type != "bridge") continue;
    const std::string& bridge = master->second->name;
    plan::Object& object = objects.emplace_back();
    object.kind = plan::kPort;
    object.key = bridge + "/" + link.name;
    object.name = object.key;
    object.owned = ownership.owns_link(link.alias);
    object.attrs["bridge"] = bridge;
    object.attrs["link"] = link.name;
  }
  return objects;
}

void set_master(Netlink& netlink, const std::string& link, int master, const std::string& what) {
  Message message(RTM_NEWLINK, 0);
  message.put_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  message.put_str(IFLA_IFNAME, link);
  message.put_u32(IFLA_MASTER, static_cast<uint32_t>(master));
  netlink.request(message, what);
}

void flush_fdb(Netlink& netlink, const std::string& bridge, const std::string& what) {
  Message message(RTM_NEWLINK, 0);
  message.put_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  message.put_str(IFLA_IFNAME, bridge);
  nlattr* linkinfo = message.nest_start(IFLA_LINKINFO);
  message.put_str(IFLA_INFO_KIND, "bridge");
  nlattr* data = message.nest_start(IFLA_INFO_DATA);
  message.put(IFLA_BR_FDB_FLUSH, nullptr, 0);
  message.nest_end(data);
  message.nest_end(linkinfo);
  netlink.request(message, what + ": flushing the bridge's learned MACs");
}

void create(Netlink& netlink, const plan::Object& desired, const Ownership&) {
  const std::string what = detail::what("create", desired);
  const std::string bridge = detail::require_string(desired, "bridge", "create");
  const std::string link = detail::require_string(desired, "link", "create");
  set_master(netlink, link, detail::ifindex_for(netlink, bridge, what), what);
  if (detail::bool_attr(desired, "flush_fdb").value_or(false)) flush_fdb(netlink, bridge, what);
}

// Both attributes are part of the key: a desired and an observed port with the same key are
// the same membership, so there is never anything to change.
void modify(Netlink&, const plan::Object&, const plan::Object&) {}

void remove(Netlink& netlink, const plan::Object& observed) {
  set_master(netlink, detail::require_string(observed, "link", "remove"), 0,
             detail::what("remove", observed));
}

}  // namespace

KindOps port_kind() { return {plan::kPort, observe, create, modify, remove}; }

}  // namespace etherctl::kernel
