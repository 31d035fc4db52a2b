#include "failover/files.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace etherctl::failover {

namespace {

// An exclusive flock of `fd` while it lives (a failure to lock is left to the caller's
// fallback: `locked` says it).
struct FileLock {
  int fd;
  bool locked = false;
  explicit FileLock(int fd) : fd(fd) {
    int rc;
    do {
      rc = flock(fd, LOCK_EX);
    } while (rc != 0 && errno == EINTR);
    locked = rc == 0;
  }
  ~FileLock() {
    if (locked) flock(fd, LOCK_UN);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
};

// Writes `text` to `path` through a temporary file and a rename: readers (keepalived's inotify
// on the ready file, status on the role record) never see half a file.
void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << text;
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(error));
  }
}

}  // namespace

void FailoverFiles::create() const {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw std::runtime_error("cannot create " + dir + ": " + error.message());
}

bool FailoverFiles::agent_running() const {
  const int fd = open(agent_lock().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  // A shared lock is refused while the agent holds its exclusive one.
  const bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);
  return held;
}

nlohmann::json FailoverFiles::read_role() const {
  std::ifstream in(role());
  if (!in) return nullptr;
  auto value = nlohmann::json::parse(in, nullptr, false);
  return value.is_discarded() ? nlohmann::json() : value;
}

void FailoverFiles::write_role(const nlohmann::json& record) const {
  write_atomically(role(),
                   record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

void FailoverFiles::write_ready(bool ready) const {
  write_atomically(this->ready(), ready ? "0\n" : "1\n");
}

void FailoverFiles::remove() const {
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

bool FailoverFiles::join_if_agent_active(const std::function<void()>& join) const {
  const int fd = open(gate().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  const FileLock lock(fd);
  if (!lock.locked) return false;
  char text[16] = {};
  const ssize_t n = pread(fd, text, sizeof text - 1, 0);
  if (n <= 0 || std::string(text, static_cast<size_t>(n)) != "active\n" || !agent_running()) {
    return false;
  }
  join();
  return true;
}

PublishedRole::PublishedRole(const std::string& path)
    : fd_(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
  if (fd_ < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
}

PublishedRole::~PublishedRole() { close(fd_); }

void PublishedRole::write(const std::string& role, const std::function<void()>& while_locked) {
  const FileLock lock(fd_);
  // Emptied first: a write that fails half-way leaves a file that reads as not active.
  if (ftruncate(fd_, 0) == 0) {
    const std::string text = role + "\n";
    const ssize_t written = pwrite(fd_, text.data(), text.size(), 0);
    (void)written;
  }
  if (while_locked) while_locked();
}

}  // namespace etherctl::failover
