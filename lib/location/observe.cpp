#include "location/observe.hpp"

#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <stdexcept>

namespace etherctl::location {

namespace {

std::string format_mac(const nlattr* attr) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto* bytes = static_cast<const uint8_t*>(mnl_attr_get_payload(attr));
  std::string text;
  for (size_t i = 0; i < mnl_attr_get_payload_len(attr); ++i) {
    if (i) text += ':';
    text += kHex[bytes[i] >> 4];
    text += kHex[bytes[i] & 0xf];
  }
  return text;
}

// Attributes of a neighbour message (after its ndmsg), indexed by type.
void index_attributes(const nlmsghdr* header, const nlattr* (&table)[NDA_MAX + 1]) {
  std::fill(std::begin(table), std::end(table), nullptr);
  mnl_attr_parse(
      header, sizeof(ndmsg),
      [](const nlattr* attr, void* data) {
        auto* tb = static_cast<const nlattr**>(data);
        const uint16_t type = mnl_attr_get_type(attr);
        if (type <= NDA_MAX) tb[type] = attr;
        return MNL_CB_OK;
      },
      table);
}

// One neighbour dump of `family`, read again when a concurrent change interrupted it.
void dump_neighbours(kernel::Netlink& netlink, uint8_t family,
                     const std::function<void(const ndmsg*, const nlattr* const*)>& on_entry) {
  for (int attempt = 1;; ++attempt) {
    kernel::Message message(RTM_GETNEIGH, 0);
    message.put_header<ndmsg>()->ndm_family = family;
    try {
      netlink.dump(message, [&](const nlmsghdr* header) {
        if (header->nlmsg_type != RTM_NEWNEIGH ||
            mnl_nlmsg_get_payload_len(header) < sizeof(ndmsg)) {
          return;
        }
        const nlattr* tb[NDA_MAX + 1];
        index_attributes(header, tb);
        on_entry(static_cast<const ndmsg*>(mnl_nlmsg_get_payload(header)), tb);
      });
      return;
    } catch (const kernel::KernelError& e) {
      if (e.error() != EINTR || attempt == 5) throw;
    }
  }
}

}  // namespace

Observation read_observation(kernel::Netlink& netlink, const kernel::Snapshot& snapshot) {
  Observation observation;
  auto name_of = [&](int ifindex) -> const std::string* {
    const kernel::LinkInfo* link = snapshot.link_by_index(ifindex);
    return link ? &link->name : nullptr;
  };
  // AF_UNSPEC covers the IPv4 (ARP) and IPv6 (ND) tables.
  dump_neighbours(netlink, AF_UNSPEC, [&](const ndmsg* ndm, const nlattr* const* tb) {
    if ((ndm->ndm_family != AF_INET && ndm->ndm_family != AF_INET6) || !tb[NDA_DST]) return;
    const std::string* interface = name_of(ndm->ndm_ifindex);
    if (!interface) return;
    model::IpAddress address;
    address.family = ndm->ndm_family == AF_INET ? 4 : 6;
    const size_t length = address.family == 4 ? 4 : 16;
    if (mnl_attr_get_payload_len(tb[NDA_DST]) != length) return;
    std::memcpy(address.bytes.data(), mnl_attr_get_payload(tb[NDA_DST]), length);
    Neighbour& neighbour = observation.neighbours.emplace_back();
    neighbour.interface = *interface;
    neighbour.address = address;
    if (tb[NDA_LLADDR]) neighbour.mac = format_mac(tb[NDA_LLADDR]);
    // STALE, FAILED and INCOMPLETE entries are worth a new resolution.
    neighbour.usable =
        ndm->ndm_state & (NUD_REACHABLE | NUD_PERMANENT | NUD_NOARP | NUD_DELAY | NUD_PROBE);
  });
  // The bridge FDB: entries learned on (or added to) a port name the bridge in NDA_MASTER.
  dump_neighbours(netlink, AF_BRIDGE, [&](const ndmsg* ndm, const nlattr* const* tb) {
    if (!tb[NDA_LLADDR] || !tb[NDA_MASTER] || mnl_attr_get_payload_len(tb[NDA_MASTER]) < 4) {
      return;
    }
    const std::string* port = name_of(ndm->ndm_ifindex);
    const std::string* bridge = name_of(static_cast<int>(mnl_attr_get_u32(tb[NDA_MASTER])));
    if (!port || !bridge) return;
    observation.fdb.push_back({*bridge, *port, format_mac(tb[NDA_LLADDR])});
  });
  return observation;
}

void resolve_neighbour(kernel::Netlink& netlink, const kernel::Snapshot& snapshot,
                       const std::string& interface, const model::IpAddress& address) {
  const kernel::LinkInfo* link = snapshot.link_by_name(interface);
  if (!link) throw std::invalid_argument("no link \"" + interface + "\" to resolve on");
  kernel::Message message(RTM_NEWNEIGH, NLM_F_CREATE);
  auto* ndm = message.put_header<ndmsg>();
  ndm->ndm_family = address.family == 4 ? AF_INET : AF_INET6;
  ndm->ndm_ifindex = link->ifindex;
  ndm->ndm_state = NUD_NONE;
  ndm->ndm_flags = NTF_USE;
  message.put(NDA_DST, address.bytes.data(), address.family == 4 ? 4 : 16);
  netlink.request(message, "resolve " + address.str() + " on " + interface);
}

}  // namespace etherctl::location
