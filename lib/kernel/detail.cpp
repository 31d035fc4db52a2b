#include "kernel/detail.hpp"

#include <linux/if_link.h>

#include <cerrno>
#include <stdexcept>

namespace etherctl::kernel::detail {

std::string label(const plan::Object& object) {
  if (object.name.empty() || object.name == object.key) return object.key;
  return object.name + " (" + object.key + ")";
}

std::string what(std::string_view operation, const plan::Object& object) {
  std::string text(operation);
  text += ' ';
  text += object.kind;
  text += ' ';
  text += label(object);
  return text;
}

std::optional<int> int_attr(const plan::Object& object, const char* name) {
  auto it = object.attrs.find(name);
  if (it == object.attrs.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int>();
}

std::optional<bool> bool_attr(const plan::Object& object, const char* name) {
  auto it = object.attrs.find(name);
  if (it == object.attrs.end() || !it->is_boolean()) return std::nullopt;
  return it->get<bool>();
}

std::optional<std::string> string_attr(const plan::Object& object, const char* name) {
  auto it = object.attrs.find(name);
  if (it == object.attrs.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

std::string require_string(const plan::Object& object, const char* name,
                           std::string_view operation) {
  auto value = string_attr(object, name);
  if (!value || value->empty()) {
    throw std::invalid_argument(what(operation, object) + ": attribute \"" + name +
                                "\" is missing");
  }
  return *value;
}

int ifindex_for(Netlink& netlink, const std::string& name, const std::string& what) {
  try {
    return ifindex_of(netlink, name);
  } catch (const KernelError& e) {
    throw KernelError(e.error(), e.extack(), what + ": " + e.what());
  }
}

std::unordered_map<int, const LinkInfo*> links_by_index(const Snapshot& snapshot) {
  std::unordered_map<int, const LinkInfo*> index;
  index.reserve(snapshot.links.size());
  for (const LinkInfo& link : snapshot.links) index.emplace(link.ifindex, &link);
  return index;
}

void put_up(ifinfomsg* ifi, bool up) {
  ifi->ifi_change |= IFF_UP;
  if (up) {
    ifi->ifi_flags |= IFF_UP;
  } else {
    ifi->ifi_flags &= ~IFF_UP;
  }
}

void put_link_attrs(plan::Object& object, const LinkInfo& link) {
  object.attrs["ifindex"] = link.ifindex;
  object.attrs["type"] = link.type;
  object.attrs["mtu"] = link.mtu;
  object.attrs["up"] = link.up;
}

void modify_link(Netlink& netlink, const plan::Object& desired, const plan::Object& observed) {
  const auto mtu = int_attr(desired, "mtu");
  const auto up = bool_attr(desired, "up");
  const bool change_mtu = mtu && mtu != int_attr(observed, "mtu");
  const bool change_up = up && up != bool_attr(observed, "up");
  if (!change_mtu && !change_up) return;
  Message message(RTM_NEWLINK, 0);
  auto* ifi = message.put_header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  // By index when we have it (the observed object), so a rename race cannot hit another link.
  if (auto ifindex = int_attr(observed, "ifindex")) {
    ifi->ifi_index = *ifindex;
  } else {
    message.put_str(IFLA_IFNAME, observed.key);
  }
  if (change_mtu) message.put_u32(IFLA_MTU, static_cast<uint32_t>(*mtu));
  if (change_up) put_up(ifi, *up);
  netlink.request(message, what("modify", desired));
}

void remove_link(Netlink& netlink, const plan::Object& observed) {
  Message message(RTM_DELLINK, 0);
  auto* ifi = message.put_header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  if (auto ifindex = int_attr(observed, "ifindex")) {
    ifi->ifi_index = *ifindex;
  } else {
    message.put_str(IFLA_IFNAME, observed.key);
  }
  netlink.request(message, what("remove", observed));
}

void abandon_link(Netlink& netlink, const std::string& name) {
  Message message(RTM_DELLINK, 0);
  message.put_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  message.put_str(IFLA_IFNAME, name);
  try {
    netlink.request(message, "remove interrupted create of " + name);
  } catch (const KernelError& e) {
    if (e.error() != ENODEV) throw;  // never created, or already gone
  }
}

void rethrow_create_error(const KernelError& error, const std::string& type,
                          const std::string& what) {
  // The kernel answers an unknown IFLA_INFO_KIND with EOPNOTSUPP and "Unknown device type"
  // (after a failed module autoload). Say which feature is missing instead.
  if (error.error() == EOPNOTSUPP) {
    std::string feature;
    if (type == "vlan") feature = "this kernel has no 802.1Q VLAN support (8021q)";
    if (type == "bridge") feature = "this kernel has no bridge support (bridge)";
    if (type == "veth") feature = "this kernel has no veth support (veth)";
    if (!feature.empty()) {
      throw KernelError(
          error.error(), error.extack(),
          what + ": " + feature + ": " + describe_error(error.error(), error.extack()));
    }
  }
  throw KernelError(error.error(), error.extack(),
                    what + ": " + describe_error(error.error(), error.extack()));
}

void ensure_alias(Netlink& netlink, const std::string& name, const std::string& alias,
                  const std::string& what, std::optional<int> mtu) {
  // Tested on 6.18: rtnl_newlink ignores IFLA_IFALIAS when it creates a link (only do_setlink
  // applies it), so the mark needs a second request. Sending it in the create as well costs
  // nothing and covers kernels that do honour it.
  Message message(RTM_NEWLINK, 0);
  message.put_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  message.put_str(IFLA_IFNAME, name);
  message.put_str(IFLA_IFALIAS, alias);
  if (mtu) message.put_u32(IFLA_MTU, static_cast<uint32_t>(*mtu));
  try {
    netlink.request(message, what + ": set ownership alias");
  } catch (const KernelError&) {
    // An unmarked link would look foreign to every later run, and the caller treats the failed
    // create as "nothing created": take the link away again before reporting the failure.
    Message undo(RTM_DELLINK, 0);
    undo.put_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
    undo.put_str(IFLA_IFNAME, name);
    try {
      netlink.request(undo, what + ": undo");
    } catch (const KernelError&) {
      // The original failure is the one to report.
    }
    throw;
  }
}

}  // namespace etherctl::kernel::detail
