// What `etherctl watch` counts, and its Prometheus text exposition (format 0.0.4) on /metrics.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/events.hpp"

namespace etherctl::agent {

struct AgentStats {
  // Reconciles by how they ended: ok, failed, lock_held (another run had the lock), invalid.
  std::array<uint64_t, 4> reconciles{};
  // Reconciles that failed once and were run again at once from a fresh look at the kernel
  // (counted under `reconciles` once, by how the second run ended).
  uint64_t reconcile_reruns = 0;
  uint64_t changes_applied = 0;
  double last_duration_seconds = 0;
  double duration_seconds_sum = 0;
  int64_t last_reconcile_unix = 0;
  int64_t last_success_unix = 0;
  bool in_sync = false;  // the last reconcile succeeded and left nothing to change
  uint64_t reloads_ok = 0;
  uint64_t reloads_failed = 0;
  std::array<uint64_t, kEventKinds> events{};
  uint64_t event_overruns = 0;
  int64_t started_unix = 0;
  std::string digest;  // of the configuration in force
};

inline constexpr std::array<const char*, 4> kReconcileResults = {"ok", "failed", "lock_held",
                                                                 "invalid"};

// `members`: the engine report's member list (pool, member, location, weights); `tunnels`:
// datapath counters by tunnel name (as `etherctl status --json` shows them).
std::string render_metrics(const AgentStats& stats, const nlohmann::json& members,
                           const nlohmann::json& tunnels);

}  // namespace etherctl::agent
