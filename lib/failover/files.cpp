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

}  // namespace etherctl::failover
