#include "engine/state_dir.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace etherctl::engine {

StateDir StateDir::of_current_netns(const std::string& lock_dir) {
  struct stat st {};
  if (::stat("/proc/self/ns/net", &st) != 0) return StateDir(lock_dir, lock_dir + "/etherctl");
  return StateDir(lock_dir, lock_dir + "/netns-" + std::to_string(st.st_ino));
}

nlohmann::json StateDir::read(const std::string& path) {
  std::ifstream in(path);
  if (!in) return nullptr;
  auto value = nlohmann::json::parse(in, nullptr, false);
  return value.is_discarded() ? nlohmann::json() : value;
}

void StateDir::write(const std::string& path, const nlohmann::json& value) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    // Names from the command line (the site file's) need not be UTF-8; JSON must be.
    out << value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(error));
  }
}

}  // namespace etherctl::engine
