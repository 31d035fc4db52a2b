#include "support/netns.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace etherctl::test {

namespace {

constexpr const char* kPrefix = "ectest-";

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + strerror(errno));
}

// Deletes namespaces "ectest-<pid>-<n>" whose process is gone. Namespaces of live processes
// (other test binaries running in parallel) are left alone.
void delete_orphans() {
  DIR* dir = opendir("/run/netns");
  if (!dir) return;
  std::vector<std::string> orphans;
  while (dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (name.rfind(kPrefix, 0) != 0) continue;
    const long pid = strtol(name.c_str() + strlen(kPrefix), nullptr, 10);
    if (pid > 0 && kill(static_cast<pid_t>(pid), 0) < 0 && errno == ESRCH) {
      orphans.push_back(name);
    }
  }
  closedir(dir);
  for (const auto& name : orphans) run_status("ip netns del " + name);
}

}  // namespace

RunResult run_status(const std::string& command) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) < 0) fail_errno("pipe");
  if (pipe2(err, O_CLOEXEC) < 0) fail_errno("pipe");
  const pid_t pid = fork();
  if (pid < 0) fail_errno("fork");
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  RunResult result;
  // Read both pipes together so a chatty stderr cannot block the child on a full pipe.
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.output, &result.error};
  int open_pipes = 2;
  char buffer[65536];
  while (open_pipes > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      fail_errno("poll");
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n > 0) {
        sinks[i]->append(buffer, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_pipes;
      }
    }
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string run(const std::string& command) {
  RunResult result = run_status(command);
  if (result.status != 0) {
    throw std::runtime_error("command failed (exit " + std::to_string(result.status) +
                             "): " + command + "\n" + result.error);
  }
  return result.output;
}

TestNetns::TestNetns() {
  static std::once_flag orphans_deleted;
  std::call_once(orphans_deleted, delete_orphans);
  static std::atomic<int> counter{0};
  name_ = kPrefix + std::to_string(getpid()) + "-" + std::to_string(counter++);
  // thread-self: setns() changes the calling thread only, so that is what we return to.
  original_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original_ < 0) fail_errno("open /proc/thread-self/ns/net");
  run("ip netns add " + name_);
  const int fd = open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
    const int error = errno;
    if (fd >= 0) close(fd);
    run_status("ip netns del " + name_);
    close(original_);
    errno = error;
    fail_errno("enter namespace " + name_);
  }
  close(fd);
  // Loopback is down in a new namespace; local routes and some probes need it.
  run("ip link set lo up");
}

TestNetns::~TestNetns() {
  if (setns(original_, CLONE_NEWNET) < 0) {
    // Staying in the test namespace would make later tests run in the wrong place.
    fprintf(stderr, "TestNetns: cannot return to the original namespace: %s\n", strerror(errno));
    std::abort();
  }
  close(original_);
  RunResult result = run_status("ip netns del " + name_);
  if (result.status != 0) {
    fprintf(stderr, "TestNetns: ip netns del %s failed: %s\n", name_.c_str(), result.error.c_str());
  }
}

bool require_all_features() {
  const char* value = getenv("ETHERCTL_REQUIRE_ALL_FEATURES");
  return value && std::string(value) == "1";
}

std::optional<std::string> missing_feature(const std::string& feature) {
  static std::mutex mutex;
  static std::map<std::string, std::optional<std::string>> cache;
  std::lock_guard lock(mutex);
  if (auto it = cache.find(feature); it != cache.end()) return it->second;

  std::string probe, reason;
  if (feature == "vlan") {
    probe =
        "ip link add ecprobe0 type veth peer name ecprobe1 && "
        "ip link add link ecprobe0 name ecprobe0.7 type vlan id 7";
    reason = "this kernel has no 802.1Q VLAN support; runs in the stock-kernel VM";
  } else if (feature == "ipvs") {
    probe = "ipvsadm -L -n";
    reason = "this kernel has no IPVS (ip_vs); runs in the stock-kernel VM";
  } else if (feature == "vlan_filtering") {
    probe =
        "ip link add ecprobebr type bridge && "
        "ip link set ecprobebr type bridge vlan_filtering 1";
    reason = "this kernel has no bridge VLAN filtering; runs in the stock-kernel VM";
  } else if (feature == "bridge") {
    probe = "ip link add ecprobebr type bridge";
    reason = "this kernel has no bridge support";
  } else {
    throw std::invalid_argument("missing_feature: unknown feature \"" + feature + "\"");
  }
  RunResult result;
  {
    TestNetns scratch;  // the probe's objects die with it
    result = run_status(probe);
  }
  std::optional<std::string> missing;
  if (result.status != 0) {
    std::string detail = result.error;
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
    for (char& c : detail) {
      if (c == '\n') c = ' ';
    }
    missing = reason + " (probe `" + probe + "`: " + detail + ")";
  }
  cache[feature] = missing;
  return missing;
}

}  // namespace etherctl::test
