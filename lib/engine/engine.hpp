// The one data flow every command runs: parse -> validate -> select device -> observe ->
// plan -> execute (with undo on failure) -> verify. Commands differ only in where they stop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/problem.hpp"
#include "model/site.hpp"
#include "plan/plan.hpp"

namespace etherctl::engine {

enum class Command { Validate, Plan, Apply, Destroy, Status, Confirm };

struct Options {
  Command command = Command::Plan;
  std::string site_file;
  std::optional<std::string> device;
  std::optional<std::string> netns;  // name under /run/netns, like `ip -n`
  bool wait_for_lock = false;
  std::string lock_dir = "/run/etherctl";
  // Test-only fault injection: fail the change with this index (0-based) during execute.
  std::optional<size_t> fail_at_step;
  // apply probes pool members whose neighbour entry is missing or stale (ARP/ND). `watch`
  // turns this off for runs woken by events, so a member that never answers cannot make the
  // probe's own neighbour events wake it again and again.
  bool resolve_neighbours = true;
  // A site already parsed and validated (`watch` keeps the last good file between reloads);
  // site_file then only names it, and site_sha256 is the hash of the text it was read from.
  std::shared_ptr<const model::Site> preloaded_site;
  std::string preloaded_sha256;
  // Called before each change of apply or destroy is executed (progress for long plans).
  std::function<void(size_t step, size_t total, const plan::Change& change)> on_step;
  // Apply: revert to the state before the apply unless `confirm` arrives within this many
  // seconds (see confirm.hpp).
  std::optional<int64_t> confirm_within;
  // Test-only: progress lines on stderr, so a test that kills a run knows its phase.
  bool trace = false;
  // Apply does nothing when the last run in this namespace reverted this very configuration
  // for lack of confirmation: a timer or the agent must not undo a revert. An operator's
  // apply (without it) applies it again; a changed file is a new configuration.
  bool respect_revert = false;
  // Apply waits this long for the IPsec SAs of each tunnel with "ipsec" and reports those not
  // established (Report::warnings); the configuration stays applied either way.
  std::chrono::milliseconds ipsec_wait{std::chrono::seconds(30)};
  // A unit of a failover group: the role to apply, as `watch`'s transition code decided it.
  // Without it a run reads the agent's role record while an agent runs, and otherwise leaves
  // the role's objects as they are (lib/engine/failover.hpp).
  std::optional<plan::Role> role;
  // The role gate of the agent of a failover unit (`watch` only): a gated port (one the standby
  // role leaves out of its bridge: attribute "gated" of the desired port) joins its bridge only
  // through it. It runs `join` (the netlink request) under the lock of the agent's role and
  // only while the unit is still active, and returns false otherwise; the fast block of a unit
  // that leaves the role takes the same lock. So once a unit has left the segments, no run
  // that started before can put it back. A run without a gate never joins a gated port.
  std::function<bool(const std::function<void()>& join)> join_gate;
};

// A valid site file read once: what `watch` runs on until a reload succeeds.
struct LoadedSite {
  std::shared_ptr<const model::Site> site;  // null when the file is invalid
  std::string sha256;                       // "sha256:<hex>" of the file's bytes
  std::vector<model::Problem> problems;
};
LoadedSite load(const std::string& site_file);

// This host's name without its domain: the device a run acts on when none is given and the
// site file has several (model::select_device).
std::string host_name();

// Enters the network namespace /run/netns/<name> for the calling thread (like `ip -n`);
// throws std::runtime_error naming the namespace when it cannot.
void enter_netns(const std::string& name);

enum class Outcome { Ok, Failed, LockHeld, Invalid };

struct Report {
  Outcome outcome = Outcome::Ok;
  std::string device;
  plan::Plan plan;
  bool executed = false;              // changes were sent to the kernel
  bool rolled_back = false;           // a failure was undone
  std::optional<size_t> failed_step;  // index into plan.changes of the change that failed
  std::vector<model::Problem> errors;
  int64_t duration_ms = 0;
  uint64_t netlink_requests = 0;
  uint64_t netlink_writes = 0;
  nlohmann::json status;  // Command::Status: objects and their state
  // SHA-256 of the device's effective configuration (its desired objects, normalised): equal
  // on every device that applies the same configuration, whatever the file's formatting.
  std::string digest;
  // A unit of a failover group: the digest of the configuration both units share (equal on
  // both when they applied the same file), and what status says about its role.
  std::string group_digest;
  nlohmann::json failover;
  // Virtual Location of every pool member: location, configured and effective weight, why.
  nlohmann::json members = nlohmann::json::array();
  // Repairs of what an interrupted (killed) run had left, made before observing.
  std::vector<std::string> recovered;
  // Apply with confirm_within: the pending confirmation (deadline, ...); Confirm: the apply
  // that was confirmed.
  nlohmann::json pending;
  // Apply with respect_revert: why nothing was applied ("" when it was).
  std::string held_back;
  // Apply: what is applied but not working yet (an IPsec tunnel whose SAs are not up).
  std::vector<model::Problem> warnings;

  bool changed() const { return executed && !plan.empty(); }
};

Report run(const Options& options);

// Datapath counters of each tunnel in this namespace, by tunnel name (as status shows them).
nlohmann::json tunnel_counters();

// The report as `--json` prints it (and `watch` serves it on /status).
nlohmann::json report_json(const Report& report, Command command);

}  // namespace etherctl::engine
