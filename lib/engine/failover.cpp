#include "engine/failover.hpp"

#include <unistd.h>

#include <algorithm>
#include <set>

#include "failover/keepalived_kind.hpp"
#include "model/failover.hpp"

namespace etherctl::engine::internal {

std::string role_name(std::optional<plan::Role> role) {
  if (!role) return "unknown";
  return *role == plan::Role::Active ? "active" : "standby";
}

FailoverRun failover_run(const StateDir& state, const model::Site& site,
                         const model::Device& device, std::optional<plan::Role> requested) {
  FailoverRun run;
  run.files = failover::FailoverFiles{state.failover_dir()};
  run.group = model::failover_group_of(site, device);
  if (!run.group) return run;
  run.record = run.files.read_role();
  if (requested) {
    run.role = requested;
    run.role_source = "agent";
  } else if (run.files.agent_running()) {
    const std::string role = run.record.is_object() ? run.record.value("role", "") : "";
    if (role == "active") run.role = plan::Role::Active;
    if (role == "standby") run.role = plan::Role::Standby;
    run.role_source = run.role ? "agent's record" : "agent starting";
  } else {
    run.role_source = "no agent running";
  }
  return run;
}

plan::Objects failover_desired(const FailoverRun& failover, const model::Site& site,
                               const model::Device& device, const plan::Objects& observed) {
  plan::Objects desired;
  if (failover.role) {
    desired = plan::desired_objects(site, device, *failover.role);
    // Only the agent's own runs join gated ports (through its role gate: engine.hpp); any
    // other run keeps those the kernel lacks out, as it found them.
    if (failover.role_source != "agent") {
      std::set<std::string> present;
      for (const auto& o : observed) present.insert(o.kind + " " + o.key);
      desired.erase(std::remove_if(desired.begin(), desired.end(),
                                   [&](const plan::Object& o) {
                                     return o.kind == plan::kPort &&
                                            o.attrs.value("gated", false) &&
                                            !present.count(o.kind + " " + o.key);
                                   }),
                    desired.end());
    }
  } else {
    // Unknown: the standby's objects, and of the active role's own (floating self IPs, the
    // segments' ports) those the kernel has now. New ones are not created: a unit that never
    // ran an agent is standby.
    desired = plan::desired_objects(site, device, plan::Role::Standby);
    std::set<std::string> standby;
    for (const auto& o : desired) standby.insert(o.kind + " " + o.key);
    std::set<std::string> present;
    for (const auto& o : observed) {
      if (o.owned) present.insert(o.kind + " " + o.key);
    }
    for (auto& o : plan::desired_objects(site, device, plan::Role::Active)) {
      const std::string id = o.kind + " " + o.key;
      if (!standby.count(id) && present.count(id)) desired.push_back(std::move(o));
    }
  }
  // keepalived runs where its agent runs: only the agent's own runs start it. Other runs
  // keep (and update) one that runs, and remove it with the group.
  plan::Object keepalived =
      failover::desired_keepalived(site, device, *failover.group, failover.files);
  const bool running = std::any_of(observed.begin(), observed.end(), [&](const plan::Object& o) {
    return o.kind == keepalived.kind && o.key == keepalived.key && o.owned;
  });
  if (failover.role_source == "agent" || running) desired.push_back(std::move(keepalived));
  return desired;
}

nlohmann::json failover_status(const FailoverRun& failover, const std::string& group_digest) {
  if (!failover.group) return nullptr;
  const model::FailoverGroup& group = *failover.group;
  nlohmann::json out = {{"group", group.name},
                        {"devices", group.devices},
                        {"virtual_router_id", group.virtual_router_id},
                        {"advert_int", group.advert_centiseconds / 100.0},
                        {"role", role_name(failover.role)},
                        {"role_source", failover.role_source},
                        {"agent_running", failover.files.agent_running()},
                        {"group_digest", group_digest}};
  if (failover.record.is_object()) {
    for (const char* key : {"since", "cause", "last_transition", "transitions", "peer",
                            "split_brain", "keepalived", "updated"}) {
      if (failover.record.contains(key)) out[key] = failover.record[key];
    }
  }
  return out;
}

void failover_cleanup(const StateDir& state, bool in_group) {
  if (in_group) return;
  const failover::FailoverFiles files{state.failover_dir()};
  if (access(files.dir.c_str(), F_OK) == 0 && !files.agent_running()) files.remove();
}

}  // namespace etherctl::engine::internal
