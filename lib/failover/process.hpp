// keepalived processes: finding the ones of this network namespace, starting one as a daemon
// that outlives whoever started it (an `etherctl apply` exits, an agent may be restarted and
// adopts it), reloading and stopping one.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "failover/keepalived.hpp"

namespace etherctl::failover {

// A keepalived parent process of the calling thread's network namespace.
struct RunningKeepalived {
  pid_t pid = 0;            // the parent (its VRRP child is in vrrp_pid_file)
  std::string config_file;  // --use-file of its command line
  std::string vrrp_pid_file;
};

// keepalived parent processes whose network namespace is the calling thread's (read from
// /proc: every process named keepalived whose parent is not a keepalived).
std::vector<RunningKeepalived> keepalived_here();

// The pid in a pid file; nullopt when missing, unreadable or not a live process.
std::optional<pid_t> live_pid(const std::string& pid_file);

// Starts `argv` (keepalived_argv) in its own session, detached from the caller (it is not the
// caller's child: nobody has to reap it), with standard output and error appended to
// `log_file` and every other descriptor closed. Returns once both pid files name live
// processes. Throws std::runtime_error with the end of the log when keepalived exits or does
// not get that far within `timeout`.
pid_t start_keepalived(const std::vector<std::string>& argv, const KeepalivedFiles& files,
                       const std::string& log_file,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5));

// SIGHUP: keepalived reads its configuration again.
void reload_keepalived(pid_t pid);

// SIGTERM (keepalived resigns: priority-0 advert, STOP on the FIFO), then waits for it and its
// VRRP child to be gone; SIGKILL after `timeout`. A pid that is gone already is fine.
void stop_keepalived(pid_t pid, std::optional<pid_t> vrrp_child,
                     std::chrono::milliseconds timeout = std::chrono::seconds(5));

// The last `bytes` of a file, for error messages ("" when unreadable).
std::string tail_of(const std::string& path, size_t bytes = 2000);

}  // namespace etherctl::failover
