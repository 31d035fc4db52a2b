// One etherctl run at a time per network namespace: an flock on a file under /run/etherctl.
#pragma once

#include <string>

namespace etherctl::engine {

class RunLock {
 public:
  // Locks `path` (created if needed). Returns false when another run holds it and `wait` is
  // false; refusal() then names that run (its pid) as well as we know it.
  bool acquire(const std::string& path, bool wait);
  // "the lock <path> is held by etherctl run with pid 42; retry later or use --wait"
  const std::string& refusal() const { return refusal_; }
  RunLock() = default;
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
  std::string refusal_;
};

}  // namespace etherctl::engine
