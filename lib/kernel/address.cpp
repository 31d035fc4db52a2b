// Kind "self_ip": every IPv4 and IPv6 address. Ours carry IFA_PROTO = kEtherctlProtocol, a
// mark the kernel stores with the address (Linux 5.18+), so no state file is needed.
//
// A floating address (attribute "floating": the active unit of a failover pair holds it) is
// created the way it must move: IPv6 without duplicate address detection (usable at once, and
// not failed by the old holder's copy while it is being released), IPv4 with the interface's
// promote_secondaries on (deleting a floating address that happens to be the primary one must
// not delete the unit's fixed address of the subnet, and with it the routes through it), and
// announced to the neighbours right away (announce.hpp).
#include <linux/if_addr.h>
#include <sys/socket.h>

#include <cerrno>
#include <fstream>

#include "kernel/announce.hpp"
#include "kernel/detail.hpp"
#include "kernel/inet.hpp"

namespace etherctl::kernel {

namespace {

plan::Objects observe(const Snapshot& snapshot, const Ownership&) {
  const auto by_index = detail::links_by_index(snapshot);
  plan::Objects objects;
  objects.reserve(snapshot.addresses.size());
  for (const AddressInfo& address : snapshot.addresses) {
    auto link = by_index.find(address.ifindex);
    if (link == by_index.end()) continue;  // the link vanished between the two dumps
    plan::Object& object = objects.emplace_back();
    object.kind = plan::kSelfIp;
    std::string text = address.address + "/" + std::to_string(address.prefix);
    object.key = link->second->name + " " + text;
    object.name = object.key;
    object.owned = address.protocol == kEtherctlProtocol;
    object.attrs["interface"] = link->second->name;
    object.attrs["address"] = std::move(text);
  }
  return objects;
}

IpPrefix parse(const plan::Object& object, std::string_view operation) {
  const std::string text = detail::require_string(object, "address", operation);
  auto prefix = parse_prefix(text);
  if (!prefix) {
    throw std::invalid_argument(detail::what(operation, object) + ": \"" + text +
                                "\" is not an address/prefix");
  }
  return *prefix;
}

Message address_message(uint16_t type, uint16_t flags, const IpPrefix& prefix, int ifindex) {
  Message message(type, flags);
  auto* ifa = message.put_header<ifaddrmsg>();
  ifa->ifa_family = static_cast<uint8_t>(prefix.family);
  ifa->ifa_prefixlen = static_cast<uint8_t>(prefix.length);
  ifa->ifa_index = static_cast<uint32_t>(ifindex);
  // Like `ip address add`: IFA_LOCAL is the address, IFA_ADDRESS the same (no peer).
  message.put(IFA_LOCAL, prefix.bytes.data(), prefix.size());
  message.put(IFA_ADDRESS, prefix.bytes.data(), prefix.size());
  return message;
}

void keep_secondaries(const std::string& interface, const std::string& what) {
  std::ofstream out("/proc/sys/net/ipv4/conf/" + interface + "/promote_secondaries");
  out << "1\n";
  out.close();
  if (!out) {
    throw KernelError(EIO, "",
                      what + ": cannot set net.ipv4.conf." + interface + ".promote_secondaries");
  }
}

void create(Netlink& netlink, const plan::Object& desired, const Ownership&) {
  const std::string what = detail::what("create", desired);
  const IpPrefix prefix = parse(desired, "create");
  const std::string interface = detail::require_string(desired, "interface", "create");
  const bool floating = detail::bool_attr(desired, "floating").value_or(false);
  const int ifindex = detail::ifindex_for(netlink, interface, what);
  if (floating && prefix.family == AF_INET) keep_secondaries(interface, what);
  Message message = address_message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, prefix, ifindex);
  message.put_u8(IFA_PROTO, kEtherctlProtocol);
  if (floating && prefix.family == AF_INET6) message.put_u32(IFA_FLAGS, IFA_F_NODAD);
  netlink.request(message, what);
  if (floating) {
    try {
      announce_address(interface, prefix);
    } catch (const KernelError&) {
      // Best effort (a link that is down cannot send): the address is in place, and the
      // failover agent announces floating addresses again after every takeover.
    }
  }
}

// Interface and address make the key: nothing else is managed, so nothing to change.
void modify(Netlink&, const plan::Object&, const plan::Object&) {}

void remove(Netlink& netlink, const plan::Object& observed) {
  const std::string what = detail::what("remove", observed);
  const IpPrefix prefix = parse(observed, "remove");
  const std::string interface = detail::require_string(observed, "interface", "remove");
  Message message =
      address_message(RTM_DELADDR, 0, prefix, detail::ifindex_for(netlink, interface, what));
  try {
    netlink.request(message, what);
  } catch (const KernelError& e) {
    // Gone already: deleting a primary IPv4 address deletes the secondary addresses of its
    // subnet with it (unless promote_secondaries is set), so removing both in one plan met
    // "Address not found" for the second and failed the apply.
    if (e.error() != EADDRNOTAVAIL) throw;
  }
}

}  // namespace

KindOps address_kind() { return {plan::kSelfIp, observe, create, modify, remove}; }

}  // namespace etherctl::kernel
