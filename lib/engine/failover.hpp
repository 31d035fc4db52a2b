// The engine's side of failover groups (docs/failover.md): which role a unit's run applies,
// what that role wants of the kernel, and what `status` says about it. Internal to lib/engine.
//
// The role is read from somewhere explicit: the agent (`etherctl watch`) decides it and passes
// it to its own runs (Options::role); any other run (an operator's apply, the reconcile timer,
// status) reads the agent's role record, but only while the agent runs. Without a running
// agent the role is unknown, and a run leaves the role's objects (floating self IPs, the
// segments' ports) as the kernel has them: it neither takes nor gives up the role behind the
// back of the election. A unit that never had an agent holds none of them.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "engine/state_dir.hpp"
#include "failover/files.hpp"
#include "model/site.hpp"
#include "plan/plan.hpp"

namespace etherctl::engine::internal {

struct FailoverRun {
  const model::FailoverGroup* group = nullptr;  // null: the device is in no group
  failover::FailoverFiles files;
  std::optional<plan::Role> role;  // what the run applies; nullopt: unknown (held as it is)
  std::string role_source;         // why that role: "agent", "agent's record", "no agent running"
  nlohmann::json record;           // the agent's role record (null when none)
};

// The failover side of a run of `device`, in the namespace of `state`.
FailoverRun failover_run(const StateDir& state, const model::Site& site,
                         const model::Device& device, std::optional<plan::Role> requested);

// The desired objects of a unit of a group, for its role (or, unknown, held as `observed` has
// them), with its keepalived.
plan::Objects failover_desired(const FailoverRun& failover, const model::Site& site,
                               const model::Device& device, const plan::Objects& observed);

// `status`'s "failover" section (null for a device in no group).
nlohmann::json failover_status(const FailoverRun& failover, const std::string& group_digest);

// After a run that left the device in no group (or destroyed it): the unit's files go too.
void failover_cleanup(const StateDir& state, bool in_group);

std::string role_name(std::optional<plan::Role> role);  // "active", "standby", "unknown"

}  // namespace etherctl::engine::internal
