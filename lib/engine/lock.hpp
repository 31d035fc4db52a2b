// One etherctl run at a time per network namespace: an flock on a file under /run/etherctl.
#pragma once

#include <string>

namespace etherctl::engine {

class RunLock {
 public:
  // Locks `path` (created if needed). Returns false when another run holds it and `wait` is
  // false; *holder then names that run (its pid) as well as we know it.
  bool acquire(const std::string& path, bool wait, std::string* holder);
  ~RunLock();

 private:
  int fd_ = -1;
};

}  // namespace etherctl::engine
