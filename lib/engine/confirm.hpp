// Confirm or revert: `etherctl apply --confirm-within 120s site.json` applies, and unless
// `etherctl confirm` arrives in time the namespace is put back as it was before the apply
// (like VyOS `commit-confirm` or `netplan try`).
//
// The design must survive the death of the operator's session, which is exactly what a bad
// network change tends to cause, so the revert depends on nothing of the apply process:
//
// - Before executing anything, the apply writes a record next to the lock
//   (StateDir::pending(), state_dir.hpp): the deadline, a random token, and the previous
//   state (the objects etherctl owned before the apply, with the attributes that re-create
//   them, and the MTU and up state of the interfaces the apply adopts).
// - It then starts a detached waiter: the etherctl binary itself (a hidden command), in a new
//   session, in the caller's own network namespace, with stdio on /dev/null and no inherited
//   descriptors. A hangup of the terminal, the apply process dying (even kill -9 half-way), or
//   the caller's shell exiting do not reach it.
// - At the deadline the waiter enters the namespace, takes the same lock as every run and,
//   if the record is still there with its token, reverts: it plans from the previous state
//   against the kernel as it is now and executes that plan with the same journal, rollback
//   and verify as an apply. The outcome goes to syslog and to the last-apply record that
//   `status` shows. A unit of a failover group: the revert puts a gated bridge port back only
//   while the unit's agent runs and holds the active role, under the lock of the role it
//   publishes (docs/failover.md, "The role gate"); otherwise the port stays out and the
//   record says so.
// - `etherctl confirm` takes the lock, removes the record and ends the waiter. While a record
//   exists, apply and destroy are refused (exit 3), so that the revert never undoes changes it
//   did not see. Status shows the pending confirmation and its deadline.
//
// Limits: /run is a tmpfs, so a reboot forgets a pending revert (and the kernel state it was
// about). Where logind kills a session's processes at logout (KillUserProcesses=yes), start
// the apply with `systemd-run --scope` so that the waiter outlives the session. A waiter that
// was killed cannot revert: status says so, and `etherctl confirm` clears the record.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "engine/engine.hpp"
#include "engine/state_dir.hpp"
#include "plan/object.hpp"

namespace etherctl::engine {

// A --confirm-within duration (duration.hpp: "120s", "2m", "90") in whole seconds, 1 s .. 24 h;
// nullopt when malformed or out of range.
std::optional<int64_t> parse_confirm_within(const std::string& text);

// The pending confirmation of the namespace, or null (no apply is pending).
nlohmann::json read_pending(const StateDir& state);
// Whether the record's waiter still runs.
bool waiter_alive(const nlohmann::json& pending);
// What `status` shows of it: deadline, seconds left, site file, waiter pid and liveness.
nlohmann::json pending_status(const nlohmann::json& pending);
// "an apply of site.json (device dc1) awaits confirmation until 2026-11-25 20:43:10 (87 s)".
std::string describe_pending(const nlohmann::json& pending);

// The previous state an apply would revert to: the owned objects observed before it, and the
// interfaces it adopts (`desired` objects with adopted set) as they were.
plan::Objects previous_state(const plan::Objects& observed, const plan::Objects& desired);

// The ports of `previous` that the revert may put back only through the gate of the unit's
// agent (FailoverFiles::join_if_agent_active), for a unit of a failover group: every port of
// the previous state but those the file declares ungated (`active`: the unit's desired objects
// in the active role). A port the file lacks may have been gated by the file before it; a unit
// that leaves its group (`in_group` false) had its keepalived (`observed`) and gates them all.
// Not a failover unit, before or now: none.
std::set<std::string> revert_gated_ports(const plan::Objects& previous,
                                         const plan::Objects& observed, bool in_group,
                                         const plan::Objects& active);

// Records the pending confirmation and starts its waiter (in the network namespace open as
// `home_netns`, or the current one when it is -1). Called under the lock, before the apply
// executes. `gated_ports`: revert_gated_ports. Throws std::runtime_error when the waiter cannot
// be started (nothing changed).
nlohmann::json arm_revert(const Options& options, const StateDir& state, const std::string& device,
                          const std::string& digest, const plan::Objects& previous,
                          const std::set<std::string>& gated_ports, int home_netns);
// The apply failed and rolled back: there is nothing to revert. Removes the record, ends the
// waiter.
void disarm_revert(const StateDir& state, const nlohmann::json& pending);

// `etherctl confirm`: keeps the pending apply. Outcome Failed (exit 1) with a message when
// nothing is pending or the deadline has passed; LockHeld when another run holds the lock.
Report confirm(const Options& options);

// The waiter (hidden command `_revert-waiter RECORD TOKEN`): sleeps until the deadline, then
// reverts. Returns its exit status.
int revert_waiter(const std::string& record_path, const std::string& token);

}  // namespace etherctl::engine
