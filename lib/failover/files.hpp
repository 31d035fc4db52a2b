// The files of a failover unit, in one directory per network namespace (the engine's state
// directory: <lock dir>/netns-<inode>.failover/). Every path is said here, once:
//   keepalived.conf, keepalived.pid, vrrp.pid, keepalived.log   keepalived (keepalived_kind)
//   agent-ready     keepalived's track_file: 0 while the agent applies transitions, else 1
//   agent.lock      held (flock) by the running agent: `apply` asks it whether one runs
//   role.json       the role the agent decided, its cause and time, the election as it sees it
//   role-gate       the role the agent's gate holds, for other processes (PublishedRole)
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "failover/keepalived.hpp"

namespace etherctl::failover {

struct FailoverFiles {
  std::string dir;

  std::string config() const { return dir + "/keepalived.conf"; }
  std::string pid() const { return dir + "/keepalived.pid"; }
  std::string vrrp_pid() const { return dir + "/vrrp.pid"; }
  std::string log() const { return dir + "/keepalived.log"; }
  std::string ready() const { return dir + "/agent-ready"; }
  std::string agent_lock() const { return dir + "/agent.lock"; }
  std::string role() const { return dir + "/role.json"; }
  std::string gate() const { return dir + "/role-gate"; }
  KeepalivedFiles keepalived() const { return {config(), pid(), vrrp_pid()}; }

  // Creates the directory (and its parents) when missing. Throws std::runtime_error.
  void create() const;
  // Whether an agent holds agent.lock now.
  bool agent_running() const;
  // The agent's role record: null when missing or unreadable.
  nlohmann::json read_role() const;
  // Writes it atomically. Throws std::runtime_error naming the file.
  void write_role(const nlohmann::json& record) const;
  // 0 (the agent applies transitions: keepalived may be master) or 1 (it may not).
  void write_ready(bool ready) const;
  // Removes the directory and everything in it (the group left the file).
  void remove() const;
  // For a process that is not the agent (the revert of an unconfirmed apply): runs `join`
  // (the netlink request that puts a gated port into its bridge) under the lock of the
  // published role, only while the agent runs and its gate says active; false when it did not
  // run it (no agent, another role, no file: a unit without its agent joins no segments).
  bool join_if_agent_active(const std::function<void()>& join) const;
};

// The agent's side of role-gate: the role its RoleGate holds ("active", "standby" or
// "unknown"), rewritten in place under an exclusive flock of the file, which is never
// replaced. join_if_agent_active takes the same lock, so a join by another process either
// comes before the agent's block (which then takes the port out) or sees the new role.
class PublishedRole {
 public:
  // Opens (creates) the file. Throws std::runtime_error naming it.
  explicit PublishedRole(const std::string& path);
  ~PublishedRole();
  PublishedRole(const PublishedRole&) = delete;
  PublishedRole& operator=(const PublishedRole&) = delete;

  // Locks the file, writes `role`, runs `while_locked` (may be empty), unlocks. Never throws
  // for the file: `while_locked` (the block of a unit that leaves the role) runs whatever
  // happens to it, and a file left empty reads as not active.
  void write(const std::string& role, const std::function<void()>& while_locked);

 private:
  int fd_ = -1;
};

}  // namespace etherctl::failover
