#include "kernel/snapshot.hpp"

#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "kernel/inet.hpp"

namespace etherctl::kernel {

namespace {

// Indexes the attributes that follow a family header by type, without copying: the parsers
// below then read only what they need. Types beyond `max` (newer kernels) are ignored.
template <size_t N>
void index_attributes(const void* start, size_t length, const nlattr* (&table)[N]) {
  std::fill(std::begin(table), std::end(table), nullptr);
  int remaining = static_cast<int>(length);
  for (auto* attr = static_cast<const nlattr*>(start); mnl_attr_ok(attr, remaining);
       attr = mnl_attr_next(attr)) {
    remaining -= MNL_ALIGN(attr->nla_len);
    const uint16_t type = mnl_attr_get_type(attr);
    if (type < N) table[type] = attr;
  }
}

template <size_t N>
void index_payload(const nlmsghdr* header, size_t family_header, const nlattr* (&table)[N]) {
  const auto* start =
      static_cast<const char*>(mnl_nlmsg_get_payload(header)) + MNL_ALIGN(family_header);
  const auto* end = static_cast<const char*>(mnl_nlmsg_get_payload_tail(header));
  index_attributes(start, end > start ? static_cast<size_t>(end - start) : 0, table);
}

template <size_t N>
void index_nested(const nlattr* nest, const nlattr* (&table)[N]) {
  index_attributes(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), table);
}

// Attribute readers that tolerate a short (malformed) attribute instead of reading past it.
uint32_t get_u32(const nlattr* attr) {
  return attr && mnl_attr_get_payload_len(attr) >= 4 ? mnl_attr_get_u32(attr) : 0;
}
uint16_t get_u16(const nlattr* attr) {
  return attr && mnl_attr_get_payload_len(attr) >= 2 ? mnl_attr_get_u16(attr) : 0;
}
uint8_t get_u8(const nlattr* attr) {
  return attr && mnl_attr_get_payload_len(attr) >= 1 ? mnl_attr_get_u8(attr) : 0;
}
std::string get_string(const nlattr* attr) {
  if (!attr) return "";
  const auto* text = static_cast<const char*>(mnl_attr_get_payload(attr));
  return std::string(text, strnlen(text, mnl_attr_get_payload_len(attr)));
}
// inet_ntop of an address attribute; "" when its size does not match the family.
std::string get_address(const nlattr* attr, int family) {
  if (!attr) return "";
  const size_t expected = family == AF_INET6 ? 16 : family == AF_INET ? 4 : 0;
  if (expected == 0 || mnl_attr_get_payload_len(attr) != expected) return "";
  return format_address(family, mnl_attr_get_payload(attr));
}

std::string format_mac(const nlattr* attr) {
  if (!attr) return "";
  static constexpr char kHex[] = "0123456789abcdef";
  const auto* bytes = static_cast<const uint8_t*>(mnl_attr_get_payload(attr));
  const size_t length = mnl_attr_get_payload_len(attr);
  std::string text;
  text.reserve(length * 3);
  for (size_t i = 0; i < length; ++i) {
    if (i) text += ':';
    text += kHex[bytes[i] >> 4];
    text += kHex[bytes[i] & 0xf];
  }
  return text;
}

void parse_link(const nlmsghdr* header, std::vector<LinkInfo>& links) {
  if (header->nlmsg_type != RTM_NEWLINK || mnl_nlmsg_get_payload_len(header) < sizeof(ifinfomsg)) {
    return;
  }
  const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(header));
  const nlattr* tb[IFLA_MAX + 1];
  index_payload(header, sizeof(ifinfomsg), tb);
  LinkInfo& link = links.emplace_back();
  link.ifindex = ifi->ifi_index;
  link.up = ifi->ifi_flags & IFF_UP;
  link.name = get_string(tb[IFLA_IFNAME]);
  link.alias = get_string(tb[IFLA_IFALIAS]);
  link.mtu = static_cast<int>(get_u32(tb[IFLA_MTU]));
  link.master_ifindex = static_cast<int>(get_u32(tb[IFLA_MASTER]));
  link.mac = format_mac(tb[IFLA_ADDRESS]);
  // IFLA_LINK of a link whose parent or peer lives in another namespace (IFLA_LINK_NETNSID
  // present) is an index in that namespace and would name the wrong local link: leave it 0.
  if (!tb[IFLA_LINK_NETNSID]) link.parent_ifindex = static_cast<int>(get_u32(tb[IFLA_LINK]));
  if (link.parent_ifindex == link.ifindex) link.parent_ifindex = 0;  // physical devices
  if (tb[IFLA_LINKINFO]) {
    const nlattr* info[IFLA_INFO_MAX + 1];
    index_nested(tb[IFLA_LINKINFO], info);
    link.type = get_string(info[IFLA_INFO_KIND]);
    if (link.type == "vlan" && info[IFLA_INFO_DATA]) {
      const nlattr* data[IFLA_VLAN_MAX + 1];
      index_nested(info[IFLA_INFO_DATA], data);
      link.vlan_id = get_u16(data[IFLA_VLAN_ID]);
    }
  }
}

void parse_addr(const nlmsghdr* header, std::vector<AddressInfo>& addresses) {
  if (header->nlmsg_type != RTM_NEWADDR || mnl_nlmsg_get_payload_len(header) < sizeof(ifaddrmsg)) {
    return;
  }
  const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(header));
  if (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6) return;
  const nlattr* tb[IFA_MAX + 1];
  index_payload(header, sizeof(ifaddrmsg), tb);
  // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links
  // and equals IFA_LOCAL otherwise. IPv6 sends IFA_LOCAL only for peer addresses.
  const nlattr* local = tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS];
  std::string text = get_address(local, ifa->ifa_family);
  if (text.empty()) return;
  AddressInfo& address = addresses.emplace_back();
  address.ifindex = static_cast<int>(ifa->ifa_index);
  address.family = ifa->ifa_family;
  address.address = std::move(text);
  address.prefix = ifa->ifa_prefixlen;
  address.protocol = get_u8(tb[IFA_PROTO]);
  address.scope = ifa->ifa_scope;
}

void parse_route(const nlmsghdr* header, std::vector<RouteInfo>& routes) {
  if (header->nlmsg_type != RTM_NEWROUTE || mnl_nlmsg_get_payload_len(header) < sizeof(rtmsg)) {
    return;
  }
  const auto* rtm = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(header));
  if (rtm->rtm_family != AF_INET && rtm->rtm_family != AF_INET6) return;
  if (rtm->rtm_type != RTN_UNICAST || (rtm->rtm_flags & RTM_F_CLONED)) return;
  const nlattr* tb[RTA_MAX + 1];
  index_payload(header, sizeof(rtmsg), tb);
  // rtm_table holds only 8 bits; RTA_TABLE has the full id.
  const uint32_t table = tb[RTA_TABLE] ? get_u32(tb[RTA_TABLE]) : rtm->rtm_table;
  if (table != RT_TABLE_MAIN) return;
  IpPrefix destination;
  destination.family = rtm->rtm_family;
  destination.length = rtm->rtm_dst_len;
  if (tb[RTA_DST]) {
    if (mnl_attr_get_payload_len(tb[RTA_DST]) != destination.size()) return;
    memcpy(destination.bytes.data(), mnl_attr_get_payload(tb[RTA_DST]), destination.size());
  }
  RouteInfo& route = routes.emplace_back();
  route.family = rtm->rtm_family;
  route.table = table;
  route.protocol = rtm->rtm_protocol;
  route.type = rtm->rtm_type;
  route.destination = format_prefix(network_of(destination));
  route.gateway = get_address(tb[RTA_GATEWAY], rtm->rtm_family);
  route.oif = static_cast<int>(get_u32(tb[RTA_OIF]));
  route.priority = get_u32(tb[RTA_PRIORITY]);
}

// Runs one dump into `out`. A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) may
// have skipped or doubled objects, so it is read again from scratch. Right after links are
// created the kernel keeps changing for a while on its own (carrier events are batched by
// linkwatch, then IPv6 adds link-local addresses and routes, DAD finishes), so the retries back
// off up to about two seconds in all before giving up with an error that says so.
template <typename T, typename Build, typename Parse>
void read_family(Netlink& netlink, const char* family, std::vector<T>& out, Build build,
                 Parse parse) {
  constexpr int kAttempts = 12;  // sleeps 1, 2, 4, ... 1024 ms between them: ~2 s in all
  const size_t expected = out.capacity();
  std::vector<T> previous;  // the last interrupted dump, as far as we parse it
  for (int attempt = 1;; ++attempt) {
    out.clear();
    out.reserve(expected);
    Message message = build();
    try {
      netlink.dump(message, [&](const nlmsghdr* header) { parse(header, out); });
      return;
    } catch (const KernelError& e) {
      if (e.error() != EINTR) {
        throw KernelError(e.error(), e.extack(), std::string("read ") + family + ": " + e.what());
      }
      // Thousands of new IPv6 addresses finishing DAD keep interrupting dumps for longer than
      // any backoff, with changes we do not read (flags). Two interrupted dumps in a row that
      // parse to the same objects are a consistent view of everything we look at.
      if (attempt > 1 && out == previous) return;
      previous = out;
      if (attempt == kAttempts) {
        throw KernelError(EAGAIN, "",
                          std::string("read ") + family + ": the kernel kept changing them " +
                              "during " + std::to_string(kAttempts) +
                              " dumps in a row (NLM_F_DUMP_INTR); try again");
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1 << (attempt - 1)));
  }
}

}  // namespace

Snapshot Snapshot::read(Netlink& netlink) {
  Snapshot snapshot;
  // Room for a typical host up front; big hosts grow the vectors a few times at most.
  snapshot.links.reserve(256);
  snapshot.addresses.reserve(512);
  snapshot.routes.reserve(256);
  read_family(
      netlink, "links", snapshot.links,
      [] {
        Message message(RTM_GETLINK, 0);
        message.put_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
        // Statistics are most of a link message and we never read them.
        message.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        return message;
      },
      parse_link);
  read_family(
      netlink, "addresses", snapshot.addresses,
      [] {
        Message message(RTM_GETADDR, 0);
        message.put_header<ifaddrmsg>()->ifa_family = AF_UNSPEC;
        return message;
      },
      parse_addr);
  read_family(
      netlink, "routes", snapshot.routes,
      [] {
        Message message(RTM_GETROUTE, 0);
        auto* rtm = message.put_header<rtmsg>();
        rtm->rtm_family = AF_UNSPEC;
        // With NETLINK_GET_STRICT_CHK the kernel only sends the main table.
        rtm->rtm_table = RT_TABLE_MAIN;
        return message;
      },
      parse_route);
  // Dumps come in ifindex order already; sorting makes that a guarantee for link_by_index.
  if (!std::is_sorted(snapshot.links.begin(), snapshot.links.end(),
                      [](const LinkInfo& a, const LinkInfo& b) { return a.ifindex < b.ifindex; })) {
    std::sort(snapshot.links.begin(), snapshot.links.end(),
              [](const LinkInfo& a, const LinkInfo& b) { return a.ifindex < b.ifindex; });
  }
  return snapshot;
}

const LinkInfo* Snapshot::link_by_name(const std::string& name) const {
  for (const LinkInfo& link : links) {
    if (link.name == name) return &link;
  }
  return nullptr;
}

const LinkInfo* Snapshot::link_by_index(int ifindex) const {
  // Snapshots from read() are sorted by ifindex: binary search. A hand-made snapshot (tests,
  // the planner's unit tests) may not be, so a miss falls back to a scan.
  auto it = std::lower_bound(links.begin(), links.end(), ifindex,
                             [](const LinkInfo& link, int index) { return link.ifindex < index; });
  if (it != links.end() && it->ifindex == ifindex) return &*it;
  for (const LinkInfo& link : links) {
    if (link.ifindex == ifindex) return &link;
  }
  return nullptr;
}

LinkState link_state(Netlink& netlink, const std::string& name) {
  Message message(RTM_GETLINK, 0);
  message.put_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  message.put_str(IFLA_IFNAME, name);
  message.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  LinkState state;
  netlink.query(
      message,
      [&](const nlmsghdr* header) {
        if (header->nlmsg_type == RTM_NEWLINK &&
            mnl_nlmsg_get_payload_len(header) >= sizeof(ifinfomsg)) {
          const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(header));
          state = {ifi->ifi_index, ifi->ifi_flags};
        }
      },
      "interface " + name);
  if (state.ifindex <= 0) throw KernelError(ENODEV, "", "interface " + name + ": No such device");
  return state;
}

int ifindex_of(Netlink& netlink, const std::string& name) {
  return link_state(netlink, name).ifindex;
}

}  // namespace etherctl::kernel
