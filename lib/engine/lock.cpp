#include "engine/lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace etherctl::engine {

bool RunLock::acquire(const std::string& path, bool wait) {
  auto slash = path.rfind('/');
  if (slash != std::string::npos) mkdir(path.substr(0, slash).c_str(), 0755);
  fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw std::runtime_error("cannot open lock file " + path + ": " + std::strerror(errno));
  }
  if (flock(fd_, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
    if (errno != EWOULDBLOCK) {
      throw std::runtime_error("cannot lock " + path + ": " + std::strerror(errno));
    }
    char buffer[32] = {};
    ssize_t n = pread(fd_, buffer, sizeof buffer - 1, 0);
    std::string pid = n > 0 ? std::string(buffer, static_cast<size_t>(n)) : "";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    refusal_ = "the lock " + path + " is held by " +
               (pid.empty() ? "another etherctl run" : "etherctl run with pid " + pid) +
               "; retry later or use --wait";
    close(fd_);
    fd_ = -1;
    return false;
  }
  // The pid is advisory, for the message above; the lock itself is the flock.
  std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd_, 0) == 0 && pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    // Not fatal: only the message of a competing run gets less precise.
  }
  return true;
}

RunLock::~RunLock() {
  if (fd_ >= 0) close(fd_);  // releases the flock; the file stays for the next run
}

}  // namespace etherctl::engine
