// The files of a failover unit, in one directory per network namespace (the engine's state
// directory: <lock dir>/netns-<inode>.failover/). Every path is said here, once:
//   keepalived.conf, keepalived.pid, vrrp.pid, keepalived.log   keepalived (keepalived_kind)
//   agent-ready     keepalived's track_file: 0 while the agent applies transitions, else 1
//   agent.lock      held (flock) by the running agent: `apply` asks it whether one runs
//   role.json       the role the agent decided, its cause and time, the election as it sees it
#pragma once

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
};

}  // namespace etherctl::failover
