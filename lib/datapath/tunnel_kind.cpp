#include "datapath/tunnel_kind.hpp"

#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sys/stat.h>

#include <chrono>
#include <map>
#include <optional>
#include <thread>

#include "datapath/datapath.hpp"
#include "datapath/host.hpp"
#include "datapath/support.hpp"
#include "kernel/detail.hpp"
#include "kernel/snapshot.hpp"

namespace etherctl::datapath {

namespace {

using kernel::KernelError;
using kernel::Message;
using kernel::Netlink;

std::string label(const plan::Object& object) {
  return object.name.empty() || object.name == object.key ? object.key
                                                          : object.name + " (" + object.key + ")";
}

std::string what(std::string_view operation, const plan::Object& object) {
  return std::string(operation) + " tunnel " + label(object);
}

// One loaded datapath per network namespace for the life of the process: loading the programs
// once per apply, not once per tunnel.
Datapath& datapath() {
  static std::map<ino_t, Datapath> loaded;
  struct stat st {};
  if (::stat("/proc/self/ns/net", &st) != 0) throw DatapathError(errno, "reading netns");
  auto it = loaded.find(st.st_ino);
  if (it == loaded.end()) it = loaded.emplace(st.st_ino, Datapath::open()).first;
  return it->second;
}

// Datapath errors surface as kernel errors, the type the engine reports.
[[noreturn]] void rethrow(const DatapathError& e, const std::string& what) {
  throw KernelError(e.error(), "", what + ": " + e.what());
}

using kernel::detail::bool_attr;
using kernel::detail::int_attr;

std::string string_attr(const plan::Object& o, const char* name) {
  return kernel::detail::string_attr(o, name).value_or("");
}

TunnelSpec spec_of(const plan::Object& desired) {
  TunnelSpec spec;
  spec.name = desired.key;
  spec.local = string_attr(desired, "local");
  spec.remote = string_attr(desired, "remote");
  spec.accept_reversed = bool_attr(desired, "accept_reversed").value_or(false);
  spec.fast_path = bool_attr(desired, "fast_path").value_or(false);
  spec.clamp_tcp_mss = bool_attr(desired, "clamp_tcp_mss").value_or(false);
  spec.ipsec_reqid = static_cast<uint32_t>(int_attr(desired, "ipsec_reqid").value_or(0));
  spec.esp_headroom = static_cast<uint16_t>(int_attr(desired, "esp_headroom").value_or(0));
  auto it = desired.attrs.find("underlay");
  if (it != desired.attrs.end() && it->is_array())
    for (const auto& u : *it)
      if (u.is_string()) spec.underlay.push_back(u.get<std::string>());
  return spec;
}

void set_link(Netlink& netlink, const std::string& name, std::optional<int> mtu,
              std::optional<bool> up, const std::string& alias, const std::string& what) {
  Message message(RTM_NEWLINK, 0);
  auto* ifi = message.put_header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  message.put_str(IFLA_IFNAME, name);
  if (mtu) message.put_u32(IFLA_MTU, static_cast<uint32_t>(*mtu));
  if (up) {
    ifi->ifi_change |= IFF_UP;
    if (*up) ifi->ifi_flags |= IFF_UP;
  }
  if (!alias.empty()) message.put_str(IFLA_IFALIAS, alias);
  netlink.request(message, what);
}

void delete_link(Netlink& netlink, const std::string& name, const std::string& what) {
  Message message(RTM_DELLINK, 0);
  message.put_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  message.put_str(IFLA_IFNAME, name);
  netlink.request(message, what);
}

plan::Objects observe(const kernel::Snapshot& snapshot, const kernel::Ownership& ownership) {
  std::map<std::string, TunnelStatus> configured;  // entries whose map state is complete
  try {
    for (auto& status : inspect())
      if (status.complete) configured[status.spec.name] = status;
  } catch (const DatapathError&) {
    // No readable datapath: every tunnel shows as unconfigured and gets re-applied.
  }
  plan::Objects objects;
  for (const kernel::LinkInfo& link : snapshot.links) {
    // Ours only: foreign veths are adoptable "vlan" links (see lib/kernel/vlan.cpp).
    if (link.type != "veth" || !ownership.owns_link(link.alias)) continue;
    // The programs' end and the IPsec pair: parts of their tunnel.
    if (link.name.rfind(kEipPrefix, 0) == 0 || link.name.rfind(kEspPrefix, 0) == 0 ||
        link.name.rfind(kDecPrefix, 0) == 0)
      continue;
    plan::Object& object = objects.emplace_back();
    object.kind = plan::kTunnel;
    object.key = link.name;
    object.name = link.name;
    object.owned = true;
    object.attrs["ifindex"] = link.ifindex;
    object.attrs["type"] = link.type;
    object.attrs["mtu"] = link.mtu;
    // Both ends: the tunnel carries nothing while either is down.
    const kernel::LinkInfo* eip = snapshot.link_by_name(eip_name(link.name));
    object.attrs["up"] = link.up && eip && eip->up;
    // A tunnel shows its datapath attributes only when its eip end is marked as ours and its
    // map entries are all there (TunnelStatus::complete), so that what an interrupted run left
    // half-done is planned as a modify and completed; a detached filter is "attached": false.
    auto it = configured.find(link.name);
    if (it == configured.end() || !eip || eip->alias != link.alias) continue;
    const TunnelSpec& spec = it->second.spec;
    object.attrs["local"] = spec.local;
    object.attrs["remote"] = spec.remote;
    object.attrs["accept_reversed"] = spec.accept_reversed;
    object.attrs["underlay"] = spec.underlay;
    object.attrs["fast_path"] = spec.fast_path;
    object.attrs["clamp_tcp_mss"] = spec.clamp_tcp_mss;
    object.attrs["attached"] = it->second.attached;
    object.attrs["ipsec_reqid"] = spec.ipsec_reqid;
    object.attrs["esp_headroom"] = spec.esp_headroom;
    // Offloads, queues and sysctls that the datapath needs on its links (prepare_links):
    // "ok", or what differs, so that drift shows in the plan and a modify repairs it.
    std::string drift;
    for (const auto& line : it->second.link_drift) drift += (drift.empty() ? "" : "; ") + line;
    object.attrs["link_settings"] = drift.empty() ? "ok" : drift;
  }
  return objects;
}

// Waits (up to `limit`) until every link of `names` is operationally up. The kernel sets a new
// veth pair's carrier at once but its operational state later, from the linkwatch work queue;
// a bridge port enslaved before that stays disabled until the state change arrives, and frames
// of the first few hundred milliseconds are lost. Waiting here makes "apply returned" mean
// "the tunnel forwards". A link that does not come up in time is not an error: the port comes
// up with it, as it would have without the wait.
void wait_operational(Netlink& netlink, const std::vector<std::string>& names,
                      std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (const auto& name : names) {
    for (;;) {
      const unsigned flags = kernel::link_state(netlink, name).flags;
      if ((flags & IFF_RUNNING) || std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

// A veth pair `name` + `peer`, created down and without the ownership mark (the kernel ignores
// IFLA_IFALIAS on creation: mark_veth_pair).
void create_veth_pair(Netlink& netlink, const std::string& name, const std::string& peer_name,
                      std::optional<int> mtu, const std::string& op) {
  Message message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  message.put_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  message.put_str(IFLA_IFNAME, name);
  if (mtu) message.put_u32(IFLA_MTU, static_cast<uint32_t>(*mtu));
  nlattr* linkinfo = message.nest_start(IFLA_LINKINFO);
  message.put_str(IFLA_INFO_KIND, "veth");
  nlattr* data = message.nest_start(IFLA_INFO_DATA);
  nlattr* peer = message.nest_start(VETH_INFO_PEER);
  message.put_header<ifinfomsg>()->ifi_family = AF_UNSPEC;  // the peer's own link header
  message.put_str(IFLA_IFNAME, peer_name);
  if (mtu) message.put_u32(IFLA_MTU, static_cast<uint32_t>(*mtu));
  message.nest_end(peer);
  message.nest_end(data);
  message.nest_end(linkinfo);
  netlink.request(message, op);
}

void mark_veth_pair(Netlink& netlink, const std::string& name, const std::string& peer_name,
                    const std::string& alias, const std::string& op) {
  set_link(netlink, name, std::nullopt, std::nullopt, alias, op);
  set_link(netlink, peer_name, std::nullopt, std::nullopt, alias, op);
}

bool link_exists(const std::string& name) { return ifindex_or_zero(name) != 0; }

// IPsec: the pair esp-<name> -> dec-<name> that ESP from the peer is decrypted through (see
// lib/datapath/README.md, "IPsec"), made before the datapath is applied (it needs their
// ifindexes), and ESP GRO loaded. Nothing without IPsec.
void ensure_esp_pair(Netlink& netlink, const plan::Object& desired, const std::string& alias,
                     const std::string& op) {
  if (int_attr(desired, "ipsec_reqid").value_or(0) == 0) return;
  load_esp_gro();  // when it cannot, apply says so with the tunnel's IPsec state
  const std::string esp = esp_name(desired.key), dec = dec_name(desired.key);
  if (link_exists(esp) && link_exists(dec)) return;
  if (link_exists(esp)) delete_link(netlink, esp, op);  // one end alone: a veth has two
  create_veth_pair(netlink, esp, dec, kEspPairMtu, op);
  mark_veth_pair(netlink, esp, dec, alias, op);
}

// Sets the IPsec pair up (after the datapath was applied) or, when the tunnel has no IPsec
// (any more), removes it.
void finish_esp_pair(Netlink& netlink, const plan::Object& desired, const std::string& op) {
  const std::string esp = esp_name(desired.key), dec = dec_name(desired.key);
  if (int_attr(desired, "ipsec_reqid").value_or(0) == 0) {
    if (link_exists(esp)) delete_link(netlink, esp, op);  // dec- goes with it
    return;
  }
  set_link(netlink, dec, std::nullopt, true, "", op);
  set_link(netlink, esp, std::nullopt, true, "", op);
}

void create(Netlink& netlink, const plan::Object& desired, const kernel::Ownership& ownership) {
  const std::string op = what("create", desired);
  const std::string eip = eip_name(desired.key);
  if (desired.key.size() > kMaxTunnelName)
    throw KernelError(EINVAL, "", op + ": the name must have at most 11 bytes (\"eip-\" + name)");
  // Created down: the datapath sets the links up (and their sysctls) before traffic flows.
  create_veth_pair(netlink, desired.key, eip, int_attr(desired, "mtu"), op);

  try {
    // Both ends carry the ownership mark.
    mark_veth_pair(netlink, desired.key, eip, ownership.link_alias(), op);
    ensure_esp_pair(netlink, desired, ownership.link_alias(), op);
    datapath().apply(spec_of(desired));
    finish_esp_pair(netlink, desired, op);
    bool up = bool_attr(desired, "up").value_or(true);
    set_link(netlink, eip, std::nullopt, up, "", op);
    set_link(netlink, desired.key, std::nullopt, up, "", op);
    if (up) wait_operational(netlink, {desired.key, eip}, std::chrono::seconds(5));
  } catch (...) {
    // Nothing half-made stays behind: the pairs go, and with them the filters on eip and dec.
    try {
      datapath().remove(desired.key);
    } catch (...) {
    }
    for (const std::string& link : {desired.key, esp_name(desired.key)}) {
      try {
        if (link_exists(link)) delete_link(netlink, link, op + ": undo");
      } catch (...) {
      }
    }
    try {
      throw;
    } catch (const DatapathError& e) {
      rethrow(e, op);
    }
  }
}

void modify(Netlink& netlink, const plan::Object& desired, const plan::Object& observed) {
  const std::string op = what("modify", desired);
  const std::string eip = eip_name(desired.key);
  auto mtu = int_attr(desired, "mtu");
  auto up = bool_attr(desired, "up");
  bool change_mtu = mtu && mtu != int_attr(observed, "mtu");
  bool change_up = up && up != bool_attr(observed, "up");
  bool datapath_differs = false;
  for (const char* attr :
       {"local", "remote", "accept_reversed", "underlay", "fast_path", "clamp_tcp_mss", "attached",
        "link_settings", "ipsec_reqid", "esp_headroom"}) {
    auto d = desired.attrs.find(attr), o = observed.attrs.find(attr);
    if (d != desired.attrs.end() && (o == observed.attrs.end() || *d != *o))
      datapath_differs = true;
  }
  // T's ownership mark: the eip end gets it again below (a run killed between the two marks
  // left it without), the IPsec pair when it is made.
  std::string alias;
  if (datapath_differs) {
    kernel::Snapshot snapshot = kernel::Snapshot::read(netlink);
    if (const kernel::LinkInfo* link = snapshot.link_by_name(desired.key)) alias = link->alias;
    ensure_esp_pair(netlink, desired, alias, op);
    try {
      // Atomic: the programs are replaced in place, the maps rewritten entry by entry. Also
      // completes what an interrupted run left (the observed tunnel then has no datapath
      // attributes).
      datapath().apply(spec_of(desired));
    } catch (const DatapathError& e) {
      rethrow(e, op);
    }
    finish_esp_pair(netlink, desired, op);
  }
  // The eip end first, as on create: it carries the programs.
  if (change_mtu || change_up || !alias.empty())
    set_link(netlink, eip, change_mtu ? mtu : std::nullopt, change_up ? up : std::nullopt, alias,
             op);
  if (change_mtu || change_up)
    set_link(netlink, desired.key, change_mtu ? mtu : std::nullopt, change_up ? up : std::nullopt,
             "", op);
}

void remove(Netlink& netlink, const plan::Object& observed) {
  const std::string op = what("remove", observed);
  try {
    datapath().remove(observed.key);
  } catch (const DatapathError& e) {
    rethrow(e, op);
  }
  kernel::detail::remove_link(netlink, observed);                 // its peer "eip-" goes with it
  kernel::detail::abandon_link(netlink, esp_name(observed.key));  // IPsec: dec- goes with it
}

// A create that never finished: the veth pair (with or without its marks) and whatever of
// the datapath it had configured.
void abandon(Netlink& netlink, const std::string& key) {
  try {
    datapath().remove(key);
  } catch (const DatapathError& e) {
    rethrow(e, "remove interrupted create of tunnel " + key);
  }
  kernel::detail::abandon_link(netlink, key);  // its peer goes with it
  kernel::detail::abandon_link(netlink, eip_name(key));
  kernel::detail::abandon_link(netlink, esp_name(key));
  kernel::detail::abandon_link(netlink, dec_name(key));
}

std::vector<std::string> repair(Netlink&) {
  try {
    if (!needs_pruning()) return {};
    return datapath().prune();
  } catch (const DatapathError& e) {
    rethrow(e, "repair of the datapath");
  }
}

}  // namespace

const kernel::KindOps& tunnel_kind_ops() {
  static const kernel::KindOps ops{plan::kTunnel, observe, create, modify, remove, abandon, repair};
  return ops;
}

}  // namespace etherctl::datapath
