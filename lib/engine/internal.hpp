// Pieces of the pipeline that engine.cpp (run) and confirm.cpp (confirm, the revert) share.
// Internal to lib/engine.
#pragma once

#include <cstdio>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/journal.hpp"
#include "engine/state_dir.hpp"
#include "kernel/kind.hpp"
#include "model/problem.hpp"
#include "plan/plan.hpp"

namespace etherctl::engine::internal {

// A failure that the run reports and that exits 1 (unlike invalid input or a held lock).
struct RunError {
  std::string path;
  std::string message;
};

// Kinds that live outside lib/kernel (the datapath's "tunnel") join the registry once.
void register_kinds();

// Enters /run/netns/<name>; throws RunError naming the namespace.
void enter_netns_or_throw(const std::string& name);

// Every object of every kind, owned or foreign.
plan::Objects observe(const kernel::Snapshot& snapshot, const kernel::Ownership& ownership);
plan::Objects observe(kernel::Netlink& netlink, const kernel::Ownership& ownership);

// Test-only progress lines on stderr ("etherctl-trace: <phase> ..."), so that a test that
// kills a run knows where it was (ETHERCTL_TEST_TRACE).
struct Trace {
  bool enabled = false;
  void operator()(const std::string& text) const {
    if (enabled) std::fprintf(stderr, "etherctl-trace: %s\n", text.c_str());
  }
};

// Before a run that writes observes: recovers from a killed run (the journal) and repairs
// what observation cannot show (KindOps::repair). Returns one line per repair.
std::vector<std::string> recover(kernel::Netlink& netlink, const StateDir& state);

// The joins of a failover unit's gated ports (Options::join_gate): their keys, and the agent's
// gate (empty: closed). Not a failover unit: no ports.
struct JoinGate {
  std::set<std::string> ports;  // "<bridge>/<link>"
  std::function<bool(const std::function<void()>& join)> pass;
};

struct Execution {
  bool executed = false;              // changes were sent to the kernel
  bool rolled_back = false;           // a failure was undone
  std::optional<size_t> failed_step;  // index into plan.changes of the change that failed
  std::vector<model::Problem> errors;
  // Joins of gated ports that the gate refused (the unit is no longer active): left out, the
  // rest of the plan done; the run fails and the next one applies the role the unit has now.
  std::vector<model::Problem> refused;
};

// Executes the plan's changes in order, journaling multi-request creates; when one fails,
// undoes those done (newest first, against freshly observed state) and reports both.
// on_step (may be empty) is called before each change. The journal is finished (removed)
// when this returns.
Execution execute(kernel::Netlink& netlink, const plan::Plan& plan,
                  const kernel::Ownership& ownership, Journal& journal, const JoinGate& gate,
                  std::optional<size_t> fail_at_step, const Trace& trace,
                  const std::function<void(size_t, size_t, const plan::Change&)>& on_step);

}  // namespace etherctl::engine::internal
