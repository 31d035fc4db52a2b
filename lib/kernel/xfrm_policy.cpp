// Kind "ipsec_policy": the xfrm policies of an IPsec tunnel, over NETLINK_XFRM. For a tunnel
// from L to R, two policies on protocol 97 (EtherIP):
//   out: L/32 -> R/32, requires ESP with the tunnel's reqid (the SA charon negotiates);
//   in:  R/32 -> L/32, the same template.
// The OUT policy is what keeps EtherIP from ever leaving in clear: without a state of the
// reqid (before charon negotiated one, while it is down, after it deleted one), the kernel
// drops the packet (XfrmOutNoStates) instead of sending it. It carries `flag icmp` so that
// ICMP errors about the tunnel's packets take the SA too. charon itself installs no policies
// (the connection says "policies = no"); ours take precedence over any other policy for the
// same traffic (priority kPriority, lower wins).
//
// Ours: the template's reqid is in etherctl's range (model::ipsec_reqid). Key: "L -> R".
// Removing also deletes the states of the reqid between L and R that are left (charon
// normally deletes them when the connection is terminated), larval ones included.
#include <arpa/inet.h>
#include <linux/xfrm.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "kernel/detail.hpp"
#include "kernel/xfrm_states.hpp"
#include "model/ip.hpp"
#include "model/ipsec.hpp"

namespace etherctl::kernel {

namespace {

constexpr uint32_t kPriority = 1000;
constexpr uint8_t kEtherIp = 97;

struct Address {
  int family = 0;          // AF_INET / AF_INET6
  xfrm_address_t bytes{};  // see parse(): not enough to zero a union
};

Address parse(const std::string& text, const std::string& what) {
  Address a;
  // xfrm_address_t is a union: `{}` zeroes only its first member (4 bytes), and the kernel
  // compares all 16 bytes of an IPv4 selector.
  std::memset(&a.bytes, 0, sizeof(a.bytes));
  if (inet_pton(AF_INET, text.c_str(), &a.bytes.a4) == 1) {
    a.family = AF_INET;
  } else if (inet_pton(AF_INET6, text.c_str(), &a.bytes.a6) == 1) {
    a.family = AF_INET6;
  } else {
    throw KernelError(EINVAL, "", what + ": \"" + text + "\" is not an address");
  }
  return a;
}

std::string format(int family, const xfrm_address_t& bytes) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(
      family,
      family == AF_INET ? static_cast<const void*>(&bytes.a4) : static_cast<const void*>(&bytes.a6),
      text, sizeof(text));
  return text;
}

// xfrm_address_t is a union: compare its words (the kernel zeroes what IPv4 leaves unused).
bool same_address(const xfrm_address_t& a, const xfrm_address_t& b) {
  return std::equal(std::begin(a.a6), std::end(a.a6), std::begin(b.a6));
}

uint8_t full_prefix(int family) { return family == AF_INET ? 32 : 128; }

uint8_t mode_of(const std::string& mode) {
  return mode == "tunnel" ? XFRM_MODE_TUNNEL : XFRM_MODE_TRANSPORT;
}

struct PolicyIds {
  std::string local, remote;
  uint32_t reqid = 0;
  std::string mode;
};

PolicyIds ids_of(const plan::Object& o) {
  PolicyIds ids;
  ids.local = detail::string_attr(o, "local").value_or("");
  ids.remote = detail::string_attr(o, "remote").value_or("");
  ids.reqid = static_cast<uint32_t>(detail::int_attr(o, "reqid").value_or(0));
  ids.mode = detail::string_attr(o, "mode").value_or("transport");
  return ids;
}

// The selector of the tunnel's packets: src/32 -> dst/32 (or /128), protocol 97.
void select_etherip(xfrm_selector& sel, const Address& src, const Address& dst) {
  sel.family = static_cast<uint16_t>(src.family);
  sel.saddr = src.bytes;
  sel.daddr = dst.bytes;
  sel.prefixlen_s = full_prefix(src.family);
  sel.prefixlen_d = full_prefix(dst.family);
  sel.proto = kEtherIp;
}

// One policy: src -> dst, protocol 97, with an ESP template from `tsrc` to `tdst`.
void put_policy(Message& message, int dir, const Address& src, const Address& dst,
                const PolicyIds& ids) {
  auto* info = message.put_header<xfrm_userpolicy_info>();
  select_etherip(info->sel, src, dst);
  info->lft.soft_byte_limit = XFRM_INF;
  info->lft.hard_byte_limit = XFRM_INF;
  info->lft.soft_packet_limit = XFRM_INF;
  info->lft.hard_packet_limit = XFRM_INF;
  info->priority = kPriority;
  info->dir = static_cast<uint8_t>(dir);
  info->action = XFRM_POLICY_ALLOW;
  info->flags = dir == XFRM_POLICY_OUT ? XFRM_POLICY_ICMP : 0;
  info->share = XFRM_SHARE_ANY;
  xfrm_user_tmpl tmpl{};
  tmpl.id.daddr = dst.bytes;
  tmpl.id.proto = IPPROTO_ESP;
  tmpl.family = static_cast<uint16_t>(src.family);
  tmpl.saddr = src.bytes;
  tmpl.reqid = ids.reqid;
  tmpl.mode = mode_of(ids.mode);
  tmpl.aalgos = tmpl.ealgos = tmpl.calgos = ~0u;
  message.put(XFRMA_TMPL, &tmpl, sizeof(tmpl));
}

void put_policy_id(Message& message, int dir, const Address& src, const Address& dst) {
  auto* id = message.put_header<xfrm_userpolicy_id>();
  select_etherip(id->sel, src, dst);
  id->dir = static_cast<uint8_t>(dir);
}

void write_policies(const plan::Object& object, uint16_t type, uint16_t flags,
                    const std::string& what) {
  PolicyIds ids = ids_of(object);
  Address local = parse(ids.local, what), remote = parse(ids.remote, what);
  Netlink xfrm(NETLINK_XFRM);
  // OUT first: from then on nothing leaves in clear.
  for (auto [dir, src, dst] : {std::tuple{XFRM_POLICY_OUT, &local, &remote},
                               std::tuple{XFRM_POLICY_IN, &remote, &local}}) {
    Message message(type, flags);
    put_policy(message, dir, *src, *dst, ids);
    xfrm.request(message, what);
  }
}

// Every policy on protocol 97 between single addresses whose template reqid is ours.
plan::Objects observe(const Snapshot&, const Ownership&) {
  plan::Objects objects;
  std::unique_ptr<Netlink> xfrm;
  try {
    xfrm = std::make_unique<Netlink>(NETLINK_XFRM);
  } catch (const KernelError&) {
    return objects;  // no xfrm in this kernel: nothing to observe (creating fails clearly)
  }
  struct Seen {
    plan::Object object;
    std::vector<std::string> directions;
  };
  std::map<std::string, Seen> by_key;
  Message request(XFRM_MSG_GETPOLICY, 0);
  request.put_header<xfrm_userpolicy_id>();
  try {
    xfrm->dump(request, [&](const nlmsghdr* header) {
      if (header->nlmsg_type != XFRM_MSG_NEWPOLICY) return;
      // Copied out: the netlink payload is 4-byte aligned, the struct wants 8 (UBSan).
      if (mnl_nlmsg_get_payload_len(header) < sizeof(xfrm_userpolicy_info)) return;
      xfrm_userpolicy_info copy{};
      std::memcpy(&copy, mnl_nlmsg_get_payload(header), sizeof(copy));
      const xfrm_userpolicy_info* info = &copy;
      if (info->sel.proto != kEtherIp || info->sel.prefixlen_s != full_prefix(info->sel.family) ||
          info->sel.prefixlen_d != full_prefix(info->sel.family))
        return;
      if (info->dir != XFRM_POLICY_OUT && info->dir != XFRM_POLICY_IN) return;
      const xfrm_user_tmpl* tmpl = nullptr;
      size_t templates = 0;
      const size_t offset = NLMSG_ALIGN(sizeof(*info));
      const char* attrs = static_cast<const char*>(mnl_nlmsg_get_payload(header)) + offset;
      int left = static_cast<int>(mnl_nlmsg_get_payload_len(header)) - static_cast<int>(offset);
      for (auto* attr = reinterpret_cast<const nlattr*>(attrs); left > 0 && mnl_attr_ok(attr, left);
           attr = mnl_attr_next(attr)) {
        left -= static_cast<int>(NLA_ALIGN(attr->nla_len));
        if (mnl_attr_get_type(attr) == XFRMA_TMPL &&
            mnl_attr_get_payload_len(attr) >= sizeof(xfrm_user_tmpl)) {
          tmpl = static_cast<const xfrm_user_tmpl*>(mnl_attr_get_payload(attr));
          templates = mnl_attr_get_payload_len(attr) / sizeof(xfrm_user_tmpl);
        }
      }
      if (!tmpl || !model::is_ipsec_reqid(tmpl->reqid)) return;
      const bool out = info->dir == XFRM_POLICY_OUT;
      std::string src = format(info->sel.family, info->sel.saddr);
      std::string dst = format(info->sel.family, info->sel.daddr);
      std::string local = out ? src : dst, remote = out ? dst : src;
      std::string key = local + " -> " + remote;
      Seen& seen = by_key[key];
      plan::Object& o = seen.object;
      o.kind = plan::kIpsecPolicy;
      o.key = key;
      o.name = key;
      o.owned = true;
      o.attrs["local"] = local;
      o.attrs["remote"] = remote;
      // What the OUT policy says wins: it is the one that matters for clear text.
      if (out || !o.attrs.contains("reqid")) {
        o.attrs["reqid"] = tmpl->reqid;
        o.attrs["mode"] = tmpl->mode == XFRM_MODE_TUNNEL ? "tunnel" : "transport";
      }
      // A policy that differs from what create writes (priority, action, template, ICMP flag)
      // is drift, repaired by rewriting both.
      bool exact = info->priority == kPriority && info->action == XFRM_POLICY_ALLOW &&
                   templates == 1 && tmpl->id.proto == IPPROTO_ESP &&
                   ((info->flags & XFRM_POLICY_ICMP) != 0) == out;
      if (!exact) o.attrs["exact"] = false;
      seen.directions.emplace_back(out ? "out" : "in");
    });
  } catch (const KernelError&) {
    return objects;
  }
  for (auto& [key, seen] : by_key) {
    std::sort(seen.directions.begin(), seen.directions.end());
    seen.object.attrs["directions"] = seen.directions;
    if (!seen.object.attrs.contains("exact")) seen.object.attrs["exact"] = true;
    objects.push_back(std::move(seen.object));
  }
  return objects;
}

void create(Netlink& netlink, const plan::Object& desired, const Ownership&) {
  write_policies(desired, XFRM_MSG_NEWPOLICY, NLM_F_CREATE | NLM_F_EXCL,
                 detail::what("create", desired));
  netlink.count_foreign_request(true);
}

void modify(Netlink& netlink, const plan::Object& desired, const plan::Object& observed) {
  // The selectors are the key: a changed reqid or mode rewrites both policies in place
  // (UPDPOLICY creates a missing direction).
  write_policies(desired, XFRM_MSG_UPDPOLICY, 0, detail::what("modify", desired));
  // A changed reqid leaves the old states unused; charon removes them with their connection.
  (void)observed;
  netlink.count_foreign_request(true);
}

// A larval state (SPI 0, made by the kernel when a packet met the OUT policy with no SA, for
// the key manager to fill) cannot be deleted by its address and SPI: it is in no SPI table.
// ALLOCSPI finds it by its reqid, mode and addresses and gives it an SPI, after which DELSA
// works. Without this it stays up to net.core.xfrm_acq_expires (30 s) after the tunnel left.
uint32_t give_spi(Netlink& xfrm, const xfrm_usersa_info& larval, const std::string& what) {
  Message message(XFRM_MSG_ALLOCSPI, 0);
  auto* info = message.put_header<xfrm_userspi_info>();
  info->info.family = larval.family;
  info->info.saddr = larval.saddr;
  info->info.id.daddr = larval.id.daddr;
  info->info.id.proto = larval.id.proto;
  info->info.mode = larval.mode;
  info->info.reqid = larval.reqid;
  info->min = 0x100;  // below are reserved (RFC 4303)
  info->max = 0xffffffff;
  uint32_t spi = 0;
  xfrm.query(
      message,
      [&](const nlmsghdr* header) {
        if (header->nlmsg_type == XFRM_MSG_NEWSA)
          spi = static_cast<const xfrm_usersa_info*>(mnl_nlmsg_get_payload(header))->id.spi;
      },
      what + ": give a larval state an SPI to delete it");
  return spi;
}

// Every state of `reqid`, larval ones included.
std::vector<xfrm_usersa_info> states_of(Netlink& xfrm, uint32_t reqid) {
  std::vector<xfrm_usersa_info> found;
  Message request(XFRM_MSG_GETSA, 0);
  request.put_header<xfrm_usersa_info>();
  xfrm.dump(request, [&](const nlmsghdr* header) {
    if (header->nlmsg_type != XFRM_MSG_NEWSA) return;
    // Copied out: the netlink payload is 4-byte aligned, the struct wants 8 (UBSan).
    if (mnl_nlmsg_get_payload_len(header) < sizeof(xfrm_usersa_info)) return;
    xfrm_usersa_info sa{};
    std::memcpy(&sa, mnl_nlmsg_get_payload(header), sizeof(sa));
    if (sa.reqid == reqid) found.push_back(sa);
  });
  return found;
}

void delete_states(Netlink& xfrm, const Address& src, const Address& dst, uint32_t reqid,
                   const std::string& what) {
  std::vector<xfrm_usersa_info> found = states_of(xfrm, reqid);
  std::erase_if(found, [&](const xfrm_usersa_info& sa) {
    return sa.family != src.family || !same_address(sa.saddr, src.bytes) ||
           !same_address(sa.id.daddr, dst.bytes);
  });
  for (const xfrm_usersa_info& sa : found) {
    try {
      xfrm_usersa_id id{};
      id.daddr = sa.id.daddr;
      id.spi = sa.id.spi != 0 ? sa.id.spi : give_spi(xfrm, sa, what);
      id.family = sa.family;
      id.proto = sa.id.proto;
      Message message(XFRM_MSG_DELSA, 0);
      *message.put_header<xfrm_usersa_id>() = id;
      message.put(XFRMA_SRCADDR, &src.bytes, sizeof(src.bytes));
      xfrm.request(message, what + ": delete a state left behind");
    } catch (const KernelError& e) {
      if (e.error() != ESRCH && e.error() != ENOENT) throw;
    }
  }
}

void remove(Netlink& netlink, const plan::Object& observed) {
  const std::string what = detail::what("remove", observed);
  PolicyIds ids = ids_of(observed);
  Address local = parse(ids.local, what), remote = parse(ids.remote, what);
  Netlink xfrm(NETLINK_XFRM);
  for (auto [dir, src, dst] : {std::tuple{XFRM_POLICY_OUT, &local, &remote},
                               std::tuple{XFRM_POLICY_IN, &remote, &local}}) {
    Message message(XFRM_MSG_DELPOLICY, 0);
    put_policy_id(message, dir, *src, *dst);
    try {
      xfrm.request(message, what);
    } catch (const KernelError& e) {
      if (e.error() != ENOENT) throw;
    }
  }
  delete_states(xfrm, local, remote, ids.reqid, what);
  delete_states(xfrm, remote, local, ids.reqid, what);
  netlink.count_foreign_request(true);
}

}  // namespace

KindOps xfrm_policy_kind() { return {plan::kIpsecPolicy, observe, create, modify, remove}; }

std::vector<XfrmState> xfrm_states_of(uint32_t reqid) {
  std::vector<XfrmState> states;
  try {
    Netlink xfrm(NETLINK_XFRM);
    for (const xfrm_usersa_info& sa : states_of(xfrm, reqid)) {
      states.push_back(
          {format(sa.family, sa.saddr), format(sa.family, sa.id.daddr), ntohl(sa.id.spi)});
    }
  } catch (const KernelError&) {
    // no xfrm in this kernel: no states
  }
  return states;
}

}  // namespace etherctl::kernel
