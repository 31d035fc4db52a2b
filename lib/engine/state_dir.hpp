// The files of one network namespace's runs, in the lock directory (/run/etherctl, or
// ETHERCTL_LOCK_DIR). Every path is said here, once:
//   netns-<inode>.lock          the run lock: one run at a time per namespace (lock.hpp)
//   netns-<inode>.journal       a run's intent journal; left behind only by a killed run
//                               (journal.hpp)
//   netns-<inode>.pending.json  an apply awaiting `etherctl confirm` (confirm.hpp)
//   netns-<inode>.applied.json  the last apply, destroy or revert (status shows it)
//   netns-<inode>.failover/     a failover unit's keepalived and agent (failover/files.hpp)
// The inode names the namespace, so runs in different namespaces neither block nor see each
// other.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace etherctl::engine {

class StateDir {
 public:
  // The files of the network namespace the calling thread is in now (enter it first).
  static StateDir of_current_netns(const std::string& lock_dir);

  const std::string& lock_dir() const { return lock_dir_; }
  std::string lock() const { return base_ + ".lock"; }
  std::string journal() const { return base_ + ".journal"; }
  std::string pending() const { return base_ + ".pending.json"; }
  std::string applied() const { return base_ + ".applied.json"; }
  std::string failover_dir() const { return base_ + ".failover"; }

  // A record (pending, applied): null when the file is missing or unreadable.
  static nlohmann::json read(const std::string& path);
  // Atomically (a reader, or a kill, never sees half a record); throws std::runtime_error
  // naming the file when it cannot be written.
  static void write(const std::string& path, const nlohmann::json& value);

 private:
  StateDir(std::string lock_dir, std::string base)
      : lock_dir_(std::move(lock_dir)), base_(std::move(base)) {}
  std::string lock_dir_;
  std::string base_;  // "<lock dir>/netns-<inode>"
};

}  // namespace etherctl::engine
