#include "engine/journal.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

namespace etherctl::engine {

namespace {

std::string boot_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

// SO_NETNS_COOKIE (Linux 5.14): never reused within a boot, unlike the inode in the file name.
uint64_t netns_cookie() {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  uint64_t cookie = 0;
  socklen_t length = sizeof cookie;
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
  if (::getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &length) != 0) cookie = 0;
  ::close(fd);
  return cookie;
}

nlohmann::json header() {
  return {{"etherctl_journal", 1},
          {"boot_id", boot_id()},
          {"netns_cookie", netns_cookie()},
          {"pid", static_cast<int64_t>(::getpid())}};
}

}  // namespace

Journal::Journal(std::string path) : path_(std::move(path)) {}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

void Journal::append(const std::string& line) {
  std::string text = line + "\n";
  if (fd_ < 0) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      throw std::runtime_error("cannot write the journal " + path_ + ": " + std::strerror(errno));
    }
    text = header().dump() + "\n" + text;
  }
  // One write(2) per line (the header goes with the first): a kill leaves whole lines, in the
  // page cache (no fsync: a reboot clears the kernel state the journal is about).
  if (::write(fd_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    throw std::runtime_error("cannot write the journal " + path_ + ": " + std::strerror(errno));
  }
}

void Journal::begin_create(const plan::Object& object) {
  if (!kernel::kind_ops(object.kind).abandon) return;
  append(nlohmann::json{{"create", object.kind}, {"key", object.key}}.dump());
  pending_ = object.kind + " " + object.key;
}

void Journal::end_create() {
  if (pending_.empty()) return;
  auto space = pending_.find(' ');
  append(nlohmann::json{{"done", pending_.substr(0, space)}, {"key", pending_.substr(space + 1)}}
             .dump());
  pending_.clear();
}

void Journal::finish() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(path_.c_str());
}

std::vector<std::string> Journal::recover(const std::string& path, kernel::Netlink& netlink) {
  std::ifstream in(path);
  if (!in) return {};
  std::vector<std::string> repairs;
  std::string line;
  if (!std::getline(in, line)) {  // killed between creating the file and its first line
    ::unlink(path.c_str());
    return {};
  }
  auto first = nlohmann::json::parse(line, nullptr, false);
  auto expected = header();
  if (first.is_discarded() || !first.is_object() || first.value("etherctl_journal", 0) != 1 ||
      first.value("boot_id", "") != expected["boot_id"] ||
      first.value("netns_cookie", uint64_t{0}) != expected["netns_cookie"]) {
    ::unlink(path.c_str());
    return {"journal: discarded " + path + " (written in another boot or network namespace)"};
  }
  const std::string pid = std::to_string(first.value("pid", int64_t{0}));
  // Creates without a done line, in the order they were started (at most one, normally).
  std::vector<std::pair<std::string, std::string>> unfinished;
  while (std::getline(in, line)) {
    auto entry = nlohmann::json::parse(line, nullptr, false);
    if (entry.is_discarded() || !entry.is_object()) continue;  // a torn last line
    if (entry.contains("create")) {
      unfinished.emplace_back(entry.value("create", ""), entry.value("key", ""));
    } else if (entry.contains("done")) {
      std::pair<std::string, std::string> done{entry.value("done", ""), entry.value("key", "")};
      std::erase(unfinished, done);
    }
  }
  for (const auto& [kind, key] : unfinished) {
    try {
      const auto& ops = kernel::kind_ops(kind);
      if (ops.abandon) ops.abandon(netlink, key);
      repairs.push_back("journal: removed what the interrupted create of " + kind + " " + key +
                        " (run " + pid + ") left");
    } catch (const std::exception& e) {
      // The journal stays for the next run; this one must not plan around a half-made object.
      throw std::runtime_error("cannot remove what the interrupted create of " + kind + " " + key +
                               " (run " + pid + ", journal " + path + ") left: " + e.what());
    }
  }
  ::unlink(path.c_str());
  return repairs;
}

}  // namespace etherctl::engine
