#include "failover/process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace etherctl::failover {

namespace {

using Clock = std::chrono::steady_clock;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Fields of /proc/<pid>/stat after the command name (which may contain anything).
std::vector<std::string> stat_fields(pid_t pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  std::vector<std::string> fields;
  if (close == std::string::npos) return fields;
  std::istringstream rest(stat.substr(close + 1));
  for (std::string field; rest >> field;) fields.push_back(field);
  return fields;  // [0] state, [1] ppid, ...
}

bool alive(pid_t pid) {
  if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH)) return false;
  const auto fields = stat_fields(pid);
  return !fields.empty() && fields[0] != "Z" && fields[0] != "X";
}

std::string comm_of(pid_t pid) {
  std::string comm = read_text("/proc/" + std::to_string(pid) + "/comm");
  while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  return comm;
}

std::vector<std::string> cmdline_of(pid_t pid) {
  const std::string raw = read_text("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> args;
  for (size_t start = 0; start < raw.size();) {
    const size_t end = raw.find('\0', start);
    args.push_back(raw.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return args;
}

std::string option(const std::vector<std::string>& args, const std::string& name) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == name) return args[i + 1];
    if (args[i].rfind(name + "=", 0) == 0) return args[i].substr(name.size() + 1);
  }
  return "";
}

}  // namespace

std::vector<RunningKeepalived> keepalived_here() {
  struct stat here {};
  if (stat("/proc/thread-self/ns/net", &here) != 0) return {};
  std::vector<RunningKeepalived> found;
  DIR* proc = opendir("/proc");
  if (!proc) return found;
  while (dirent* entry = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || *end != '\0' || comm_of(static_cast<pid_t>(pid)) != "keepalived") continue;
    struct stat ns {};
    if (stat(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), &ns) != 0 ||
        ns.st_ino != here.st_ino || ns.st_dev != here.st_dev) {
      continue;
    }
    const auto fields = stat_fields(static_cast<pid_t>(pid));
    if (fields.size() < 2 || fields[0] == "Z") continue;
    if (comm_of(static_cast<pid_t>(std::atol(fields[1].c_str()))) == "keepalived") continue;
    const auto args = cmdline_of(static_cast<pid_t>(pid));
    found.push_back(
        {static_cast<pid_t>(pid), option(args, "--use-file"), option(args, "--vrrp_pid")});
    if (found.back().config_file.empty()) found.back().config_file = option(args, "-f");
    if (found.back().vrrp_pid_file.empty()) found.back().vrrp_pid_file = option(args, "-r");
  }
  closedir(proc);
  return found;
}

std::optional<pid_t> live_pid(const std::string& pid_file) {
  const long pid = std::atol(read_text(pid_file).c_str());
  if (pid <= 0 || !alive(static_cast<pid_t>(pid))) return std::nullopt;
  return static_cast<pid_t>(pid);
}

std::string tail_of(const std::string& path, size_t bytes) {
  const std::string text = read_text(path);
  return text.size() > bytes ? "..." + text.substr(text.size() - bytes) : text;
}

pid_t start_keepalived(const std::vector<std::string>& argv, const KeepalivedFiles& files,
                       const std::string& log_file, std::chrono::milliseconds timeout) {
  // Stale pid files would make keepalived believe it runs already (it then exits 0).
  unlink(files.pid_file.c_str());
  unlink(files.vrrp_pid_file.c_str());
  int report[2];  // the grandchild's pid, from the child
  if (pipe2(report, O_CLOEXEC) != 0) throw std::runtime_error("keepalived: pipe failed");
  std::vector<std::string> args = argv;
  std::vector<char*> raw;
  raw.reserve(args.size() + 1);
  for (auto& a : args) raw.push_back(a.data());
  raw.push_back(nullptr);
  const pid_t child = fork();
  if (child < 0) throw std::runtime_error("keepalived: fork failed");
  if (child == 0) {
    // Child: a new session, then the daemon as a grandchild, so that it is nobody's child.
    setsid();
    const pid_t daemon = fork();
    if (daemon == 0) {
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);  // a run holds SIGHUP/SIGTERM while it executes
      const int log = open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      const int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (log >= 0) {
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
      }
      if (null >= 0) dup2(null, STDIN_FILENO);
      close_range(3, ~0U, 0);  // the run lock, sockets, the FIFO: none of keepalived's business
      execv(raw[0], raw.data());
      _exit(127);
    }
    const ssize_t written = write(report[1], &daemon, sizeof daemon);
    _exit(written == sizeof daemon && daemon > 0 ? 0 : 1);
  }
  close(report[1]);
  pid_t daemon = -1;
  const ssize_t got = read(report[0], &daemon, sizeof daemon);
  close(report[0]);
  int status = 0;
  waitpid(child, &status, 0);
  if (got != sizeof daemon || daemon <= 0) throw std::runtime_error("keepalived: fork failed");

  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (!alive(daemon)) {
      throw std::runtime_error("keepalived exited at start; its log " + log_file + " ends:\n" +
                               tail_of(log_file));
    }
    const auto parent = live_pid(files.pid_file);
    if (parent && *parent == daemon && live_pid(files.vrrp_pid_file)) return daemon;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(daemon, SIGKILL);
  throw std::runtime_error("keepalived did not start within " + std::to_string(timeout.count()) +
                           " ms; its log " + log_file + " ends:\n" + tail_of(log_file));
}

void reload_keepalived(pid_t pid) {
  if (kill(pid, SIGHUP) != 0 && errno != ESRCH) {
    throw std::runtime_error("keepalived " + std::to_string(pid) +
                             ": SIGHUP: " + std::strerror(errno));
  }
}

void stop_keepalived(pid_t pid, std::optional<pid_t> vrrp_child,
                     std::chrono::milliseconds timeout) {
  kill(pid, SIGTERM);
  const auto deadline = Clock::now() + timeout;
  auto gone = [&] { return !alive(pid) && (!vrrp_child || !alive(*vrrp_child)); };
  while (!gone() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (gone()) return;
  kill(pid, SIGKILL);
  if (vrrp_child) kill(*vrrp_child, SIGKILL);
}

}  // namespace etherctl::failover
