// Kind "ipvs_sync": the IPVS connection synchronisation daemons of the network namespace (the
// kernel's own, started over generic netlink like `ipvsadm --start-daemon`). A failover unit
// runs both, a master (sends the state of the connections it handles) and a backup (receives
// the peer's), all the time: the unit that returns after a failure then already holds the
// connections made while it was away, and no daemon is switched at a transition (keepalived's
// one-way set-up, master on the active only, loses those connections on failback).
//
// Key: "master" or "backup" (a namespace runs at most one of each). Attributes: interface (the
// multicast interface), syncid (0..255). The kernel cannot change a running daemon: both are
// immutable (a change stops and starts it).
//
// Ownership. A daemon has no free field but one: etherctl starts its daemons with the
// multicast TTL kIpvsSyncOwnershipTtl. The daemons send to 224.0.0.81, a link-local group that
// routers never forward whatever the TTL, so the mark changes nothing on the wire but the TTL
// field. Daemons started by others (keepalived's lvs_sync_daemon, ipvsadm) keep TTL 1 and are
// never touched; one in the way of ours is a conflict (the kind is exclusive).
//
// Sync rule. While etherctl's master daemon runs, the namespace syncs a connection by time, not
// by packet count (kIpvsSyncRefreshSeconds, ipvs.hpp): a unit that returns after a failure
// learns the connections made while it was away from these refreshes, before it preempts.
#include <linux/ip_vs.h>

#include <cerrno>
#include <fstream>
#include <string>

#include "kernel/detail.hpp"
#include "kernel/ipvs.hpp"
#include "kernel/ipvs_socket.hpp"

namespace etherctl::kernel {

namespace {

using ipvs_detail::IpvsSocket;
using ipvs_detail::MsgPtr;
using ipvs_detail::require_ipvs;
using ipvs_detail::send;

uint32_t state_of(const std::string& key, const std::string& what) {
  if (key == "master") return IP_VS_STATE_MASTER;
  if (key == "backup") return IP_VS_STATE_BACKUP;
  throw std::invalid_argument(what + ": a sync daemon is \"master\" or \"backup\", not \"" + key +
                              "\"");
}

plan::Objects observe(const Snapshot&, const Ownership&) {
  IpvsSocket socket;
  plan::Objects objects;
  if (!socket.family()) return objects;
  MsgPtr msg = socket.message(IPVS_CMD_GET_DAEMON, NLM_F_DUMP);
  socket.exchange(
      msg.get(),
      [&](nlattr** attrs) {
        if (!attrs[IPVS_CMD_ATTR_DAEMON]) return;
        nlattr* daemon[IPVS_DAEMON_ATTR_MAX + 1];
        if (nla_parse_nested(daemon, IPVS_DAEMON_ATTR_MAX, attrs[IPVS_CMD_ATTR_DAEMON], nullptr) <
                0 ||
            !daemon[IPVS_DAEMON_ATTR_STATE]) {
          return;
        }
        const uint32_t state = nla_get_u32(daemon[IPVS_DAEMON_ATTR_STATE]);
        if (state != IP_VS_STATE_MASTER && state != IP_VS_STATE_BACKUP) return;
        plan::Object& object = objects.emplace_back();
        object.kind = plan::kIpvsSync;
        object.key = state == IP_VS_STATE_MASTER ? "master" : "backup";
        object.name = object.key;
        const int ttl =
            daemon[IPVS_DAEMON_ATTR_MCAST_TTL] ? nla_get_u8(daemon[IPVS_DAEMON_ATTR_MCAST_TTL]) : 1;
        object.owned = ttl == kIpvsSyncOwnershipTtl;
        object.attrs = {
            {"interface", daemon[IPVS_DAEMON_ATTR_MCAST_IFN]
                              ? nla_get_string(daemon[IPVS_DAEMON_ATTR_MCAST_IFN])
                              : ""},
            {"syncid",
             daemon[IPVS_DAEMON_ATTR_SYNC_ID] ? nla_get_u32(daemon[IPVS_DAEMON_ATTR_SYNC_ID]) : 0}};
        if (!object.owned) object.attrs["ttl"] = ttl;
      },
      "observe ipvs sync daemons");
  return objects;
}

void write_sysctl(const std::string& name, const std::string& value, const std::string& what) {
  std::ofstream out("/proc/sys/net/ipv4/vs/" + name);
  out << value << "\n";
  out.close();
  if (!out) throw KernelError(EIO, "", what + ": cannot set net.ipv4.vs." + name);
}

// The namespace's sync rule while etherctl's master daemon runs: by time (every
// kIpvsSyncRefreshSeconds while a connection has traffic, and on state changes), not every 50th
// packet; the kernel's defaults again when it stops.
void sync_by_time(bool on, const std::string& what) {
  write_sysctl("sync_threshold", on ? "3 0" : "3 50", what);
  write_sysctl("sync_refresh_period", on ? std::to_string(kIpvsSyncRefreshSeconds) : "0", what);
}

void create(Netlink& netlink, const plan::Object& desired, const Ownership&) {
  const std::string what = detail::what("create", desired);
  IpvsSocket socket;
  require_ipvs(socket, what);
  const std::string interface = detail::require_string(desired, "interface", "create");
  const int syncid = detail::int_attr(desired, "syncid").value_or(0);
  MsgPtr msg = socket.message(IPVS_CMD_NEW_DAEMON, 0);
  nlattr* nest = nla_nest_start(msg.get(), IPVS_CMD_ATTR_DAEMON);
  if (!nest) throw std::length_error("ipvs: sync daemon does not fit in the message");
  nla_put_u32(msg.get(), IPVS_DAEMON_ATTR_STATE, state_of(desired.key, what));
  nla_put_string(msg.get(), IPVS_DAEMON_ATTR_MCAST_IFN, interface.c_str());
  nla_put_u32(msg.get(), IPVS_DAEMON_ATTR_SYNC_ID, static_cast<uint32_t>(syncid));
  nla_put_u8(msg.get(), IPVS_DAEMON_ATTR_MCAST_TTL, kIpvsSyncOwnershipTtl);
  nla_nest_end(msg.get(), nest);
  send(netlink, socket, msg.get(), what);
  // Only once it runs: a create that fails changes nothing.
  if (desired.key == "master") sync_by_time(true, what);
}

// Both attributes are immutable (plan.cpp): a change is a delete and a create.
void modify(Netlink&, const plan::Object&, const plan::Object&) {}

void remove(Netlink& netlink, const plan::Object& observed) {
  const std::string what = detail::what("remove", observed);
  IpvsSocket socket;
  require_ipvs(socket, what);
  MsgPtr msg = socket.message(IPVS_CMD_DEL_DAEMON, 0);
  nlattr* nest = nla_nest_start(msg.get(), IPVS_CMD_ATTR_DAEMON);
  if (!nest) throw std::length_error("ipvs: sync daemon does not fit in the message");
  nla_put_u32(msg.get(), IPVS_DAEMON_ATTR_STATE, state_of(observed.key, what));
  nla_nest_end(msg.get(), nest);
  try {
    send(netlink, socket, msg.get(), what);
  } catch (const KernelError& e) {
    if (e.error() != ESRCH) throw;  // already stopped
  }
  if (observed.key == "master") sync_by_time(false, what);
}

}  // namespace

KindOps ipvs_sync_kind() { return {plan::kIpvsSync, observe, create, modify, remove}; }

}  // namespace etherctl::kernel
