// The per-kind interface of the kernel layer, in the spirit of systemd-networkd's NetDevVTable:
// each kernel object kind lives in one file (vlan.cpp, bridge.cpp, port.cpp, address.cpp,
// route.cpp, tunnel.cpp, ...) and answers the same questions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "kernel/netlink.hpp"
#include "kernel/snapshot.hpp"
#include "plan/object.hpp"

namespace etherctl::kernel {

// Who we are: the mark etherctl leaves on what it creates.
struct Ownership {
  // The site file's device; links are marked with IFLA_IFALIAS "etherctl:<device>". Empty:
  // every device's marks count (`status` without a site file observes with it; nothing is
  // ever created with it).
  std::string device;
  std::string link_alias() const { return std::string(kLinkAliasPrefix) + device; }
  bool owns_link(const std::string& alias) const {
    return device.empty() ? alias.starts_with(kLinkAliasPrefix) : alias == link_alias();
  }
  static constexpr std::string_view kLinkAliasPrefix = "etherctl:";
};

// Protocol number etherctl stamps on its addresses (IFA_PROTO) and routes (rtm_protocol).
inline constexpr uint8_t kEtherctlProtocol = 231;

struct KindOps {
  std::string_view kind;  // one of plan::kVlan, kVlanGroup, ...
  // Every kernel object of this kind that the snapshot holds, owned or foreign (owned marked).
  plan::Objects (*observe)(const Snapshot& snapshot, const Ownership& ownership);
  // Creates the object and stamps the ownership mark.
  void (*create)(Netlink& netlink, const plan::Object& desired, const Ownership& ownership);
  // Changes the differing mutable attributes in place (desired carries the target values).
  void (*modify)(Netlink& netlink, const plan::Object& desired, const plan::Object& observed);
  // Deletes the object (for ports: releases the link from its bridge).
  void (*remove)(Netlink& netlink, const plan::Object& observed);

  // Crash recovery, for kinds whose create takes more than one kernel request (the others
  // leave these null). `abandon` removes whatever a create of `key` that never finished (the
  // process was killed) may have left: a link without its ownership mark, a half-configured
  // datapath. It tolerates missing pieces. The engine journals such creates and calls it on
  // the next run (lib/engine/journal.hpp).
  void (*abandon)(Netlink& netlink, const std::string& key) = nullptr;
  // Repairs state of the kind that observation cannot show as an object (for tunnels: datapath
  // entries whose interface is gone, pins without a tunnel). Returns one line per repair.
  // Called by runs that write, before they observe.
  std::vector<std::string> (*repair)(Netlink& netlink) = nullptr;
};

// All kinds, in creation order (delete in reverse): vlan, vlan_group, tunnel, self_ip, route,
// ipvs_service, ipvs_member, ipvs_sync, port. The kinds of lib/kernel are built in; kinds
// implemented elsewhere (the "tunnel" kind of lib/datapath) join with register_kind() at start-up.
const std::vector<KindOps>& kinds();
// Throws std::out_of_range naming the kind when it is not registered.
const KindOps& kind_ops(std::string_view kind);
// Adds a kind at its place in creation order, or replaces the kind of the same name.
// Not thread-safe: call it before any observation starts.
void register_kind(const KindOps& ops);

}  // namespace etherctl::kernel
