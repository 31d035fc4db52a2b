#include "engine/confirm.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>
#include <stdexcept>
#include <thread>

#include "engine/duration.hpp"
#include "engine/internal.hpp"
#include "engine/journal.hpp"
#include "engine/lock.hpp"
#include "engine/state_dir.hpp"
#include "failover/files.hpp"
#include "failover/keepalived_kind.hpp"

namespace etherctl::engine {

namespace {

using namespace internal;

constexpr int64_t kMaxDuration = int64_t{24} * 3600;

double now_epoch() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string local_time(double epoch) {
  std::time_t t = static_cast<std::time_t>(epoch);
  std::tm tm{};
  localtime_r(&t, &tm);
  char text[64];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S %Z", &tm);
  return text;
}

std::string random_token() {
  unsigned char bytes[16];
  if (getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) {
    throw std::runtime_error(std::string("getrandom: ") + std::strerror(errno));
  }
  static const char* hex = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token += hex[b >> 4];
    token += hex[b & 15];
  }
  return token;
}

ino_t netns_inode() {
  struct stat st {};
  return ::stat("/proc/self/ns/net", &st) == 0 ? st.st_ino : 0;
}

nlohmann::json to_json(const plan::Objects& objects) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& o : objects) {
    out.push_back({{"kind", o.kind},
                   {"key", o.key},
                   {"name", o.name},
                   {"attrs", o.attrs},
                   {"adopted", o.adopted}});
  }
  return out;
}

plan::Objects from_json(const nlohmann::json& array) {
  plan::Objects objects;
  if (!array.is_array()) return objects;
  for (const auto& o : array) {
    plan::Object object;
    object.kind = o.value("kind", "");
    object.key = o.value("key", "");
    object.name = o.value("name", object.key);
    object.attrs = o.value("attrs", nlohmann::json::object());
    object.adopted = o.value("adopted", false);
    objects.push_back(std::move(object));
  }
  return objects;
}

// The waiter: the etherctl binary itself, detached from the caller's session and terminal.
pid_t spawn_waiter(const std::string& record, const std::string& token, int home_netns) {
  std::string self = "/proc/self/exe";
  std::string name = "etherctl";
  std::string command = "_revert-waiter";
  char* argv[] = {name.data(), command.data(), const_cast<char*>(record.c_str()),
                  const_cast<char*>(token.c_str()), nullptr};
  int status_pipe[2];
  if (::pipe2(status_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    int error = errno;
    ::close(status_pipe[0]);
    ::close(status_pipe[1]);
    throw std::runtime_error(std::string("fork: ") + std::strerror(error));
  }
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec.
    int error = 0;
    if (::setsid() < 0) error = errno;
    // Back to the caller's namespace: a waiter inside the target namespace would keep it
    // alive after `ip netns del`; it enters the namespace by name at the deadline instead.
    if (!error && home_netns >= 0 && ::setns(home_netns, CLONE_NEWNET) != 0) error = errno;
    int null = error ? -1 : ::open("/dev/null", O_RDWR);
    if (!error && null < 0) error = errno;
    if (!error) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::dup2(null, 2);
      // Nothing else crosses exec: not the lock, not netlink or BPF descriptors.
      ::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::signal(SIGHUP, SIG_IGN);
      ::execv(self.c_str(), argv);
      error = errno;
    }
    ssize_t written = ::write(status_pipe[1], &error, sizeof error);
    (void)written;
    ::_exit(127);
  }
  ::close(status_pipe[1]);
  int error = 0;
  ssize_t n;
  do {
    n = ::read(status_pipe[0], &error, sizeof error);
  } while (n < 0 && errno == EINTR);
  ::close(status_pipe[0]);
  if (n > 0) {  // exec failed; the child has exited
    throw std::runtime_error(std::string("cannot start the revert waiter: ") +
                             std::strerror(error));
  }
  return pid;
}

// Ends the waiter of a record, if it is still that waiter (pids are reused).
void stop_waiter(const nlohmann::json& pending) {
  if (waiter_alive(pending)) ::kill(pending.value("waiter_pid", 0), SIGTERM);
}

// Reverts the namespace (entered, locked) to the record's previous state: the same journal,
// rollback and verify as an apply.
Report revert(const nlohmann::json& record, const StateDir& state,
              std::optional<size_t> fail_at_step, const Trace& trace) {
  Report report;
  report.device = record.value("device", "");
  kernel::Ownership ownership{report.device};
  kernel::Netlink netlink;
  trace("recover");
  report.recovered = recover(netlink, state);
  trace("observe");
  plan::Objects observed = observe(netlink, ownership);
  plan::Objects previous = from_json(record["previous"]);
  // An interface that etherctl does not create (adopted, or a foreign port of one of its
  // bridges) and that vanished since cannot be put back, nor its bridge membership; the rest
  // can.
  std::set<std::string> links;
  for (const auto& seen : observed)
    if (plan::kind_traits(seen.kind).is_link) links.insert(seen.key);
  std::set<std::string> created;  // links the revert makes itself
  for (const auto& o : previous)
    if (plan::kind_traits(o.kind).is_link && !o.adopted) created.insert(o.key);
  std::erase_if(previous, [&](const plan::Object& o) {
    if (o.adopted) return !links.count(o.key);
    if (o.kind != plan::kPort) return false;
    std::string link = o.attrs.value("link", "");
    return !links.count(link) && !created.count(link);
  });
  report.plan = plan::make_plan(previous, observed);
  if (!report.plan.conflicts.empty()) {
    report.errors = report.plan.conflicts;
    report.outcome = Outcome::Failed;
    return report;
  }
  Journal journal(state.journal());
  // A failover unit's gated ports go back only through its agent's published role: this
  // process is not the agent, and the unit may have left the active role since the apply.
  JoinGate gate;
  gate.ports = record.value("gated_ports", std::set<std::string>{});
  const failover::FailoverFiles files{state.failover_dir()};
  gate.pass = [&files](const std::function<void()>& join) {
    return files.join_if_agent_active(join);
  };
  Execution execution =
      execute(netlink, report.plan, ownership, journal, gate, fail_at_step, trace, nullptr);
  report.executed = execution.executed;
  report.rolled_back = execution.rolled_back;
  report.failed_step = execution.failed_step;
  report.errors = execution.errors;
  report.warnings = execution.refused;  // left out, not failed: the agent joins them if active
  if (!execution.failed_step && !report.plan.empty()) {
    trace("verify");
    plan::Plan after = plan::make_plan(previous, observe(netlink, ownership));
    for (const auto& change : after.changes) {
      // Whether a gated port is in its bridge is the agent's business (it may also have taken
      // one out again since).
      if (change.op == plan::Op::Create && change.desired.kind == plan::kPort &&
          gate.ports.count(change.desired.key)) {
        continue;
      }
      report.errors.push_back({"", "verify: " + plan::to_string(change.op) + " " +
                                       change.subject().kind + " " + change.subject().name +
                                       " is still needed after the revert"});
    }
  }
  report.outcome = report.errors.empty() ? Outcome::Ok : Outcome::Failed;
  return report;
}

}  // namespace

std::optional<int64_t> parse_confirm_within(const std::string& text) {
  const auto duration = parse_duration(text);
  if (!duration || duration->count() % 1000 != 0) return std::nullopt;
  const int64_t seconds = duration->count() / 1000;
  if (seconds < 1 || seconds > kMaxDuration) return std::nullopt;
  return seconds;
}

nlohmann::json read_pending(const StateDir& state) {
  auto record = StateDir::read(state.pending());
  return record.is_object() && record.contains("token") ? record : nlohmann::json();
}

bool waiter_alive(const nlohmann::json& pending) {
  int pid = pending.is_object() ? pending.value("waiter_pid", 0) : 0;
  if (pid <= 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return cmdline.find(pending.value("token", std::string("?"))) != std::string::npos;
}

nlohmann::json pending_status(const nlohmann::json& pending) {
  if (!pending.is_object()) return nullptr;
  double deadline = pending.value("deadline", 0.0);
  return {{"deadline", static_cast<int64_t>(deadline)},
          {"deadline_text", local_time(deadline)},
          {"seconds_left", std::max<int64_t>(0, static_cast<int64_t>(deadline - now_epoch()))},
          {"confirm_within_s", pending.value("confirm_within_s", int64_t{0})},
          {"site_file", pending.value("site_file", "")},
          {"digest", pending.value("digest", "")},
          {"device", pending.value("device", "")},
          {"waiter_pid", pending.value("waiter_pid", 0)},
          {"waiter_alive", waiter_alive(pending)}};
}

std::string describe_pending(const nlohmann::json& pending) {
  auto status = pending_status(pending);
  std::string text = "the apply of " + status["site_file"].get<std::string>() + " (device " +
                     status["device"].get<std::string>() + ") awaits confirmation until " +
                     status["deadline_text"].get<std::string>() + " (" +
                     std::to_string(status["seconds_left"].get<int64_t>()) + " s left)";
  if (!status["waiter_alive"].get<bool>()) {
    text += "; its revert waiter (pid " + std::to_string(status["waiter_pid"].get<int>()) +
            ") is gone, so it will not be reverted";
  }
  return text;
}

plan::Objects previous_state(const plan::Objects& observed, const plan::Objects& desired) {
  plan::Objects previous;
  std::set<std::string> owned_bridges, adopted;
  for (const auto& d : desired)
    if (d.adopted) adopted.insert(d.key);
  for (const auto& o : observed)
    if (o.kind == plan::kVlanGroup && o.owned) owned_bridges.insert(o.key);
  for (const auto& o : observed) {
    // Marked objects, and every port of our bridges: those of adopted interfaces (which
    // never carry the mark) and those others added (a hypervisor's), so that a bridge the
    // apply deleted comes back with its members.
    bool adopted_port = o.kind == plan::kPort && owned_bridges.count(o.attrs.value("bridge", ""));
    bool adopted_link = plan::kind_traits(o.kind).is_link && !o.owned && adopted.count(o.key);
    if (!o.owned && !adopted_port && !adopted_link) continue;
    plan::Object object = o;
    object.path.clear();
    object.owned = false;
    object.attrs.erase("ifindex");
    object.attrs.erase("type");
    if (adopted_link) {
      // Only what an apply changes on an adopted interface.
      nlohmann::json attrs = nlohmann::json::object();
      for (const char* attr : {"mtu", "up"})
        if (o.attrs.contains(attr)) attrs[attr] = o.attrs[attr];
      object.attrs = attrs;
      object.adopted = true;
    }
    // A failover unit's keepalived: observation has only its configuration's digest; the
    // revert needs the text (to write it back and reload, or to start it again).
    if (object.kind == plan::kKeepalived) object = failover::restorable_keepalived(object);
    previous.push_back(std::move(object));
  }
  return previous;
}

std::set<std::string> revert_gated_ports(const plan::Objects& previous,
                                         const plan::Objects& observed, bool in_group,
                                         const plan::Objects& active) {
  const bool had_group = std::any_of(observed.begin(), observed.end(), [](const plan::Object& o) {
    return o.kind == plan::kKeepalived && o.owned;
  });
  std::set<std::string> ungated;
  if (in_group) {
    for (const auto& o : active)
      if (o.kind == plan::kPort && !o.attrs.value("gated", false)) ungated.insert(o.key);
  }
  std::set<std::string> gated;
  if (!in_group && !had_group) return gated;
  for (const auto& o : previous)
    if (o.kind == plan::kPort && !ungated.count(o.key)) gated.insert(o.key);
  return gated;
}

nlohmann::json arm_revert(const Options& options, const StateDir& state, const std::string& device,
                          const std::string& digest, const plan::Objects& previous,
                          const std::set<std::string>& gated_ports, int home_netns) {
  const std::string path = state.pending();
  double now = now_epoch();
  nlohmann::json record = {{"etherctl_pending", 1},
                           {"token", random_token()},
                           {"device", device},
                           {"netns", options.netns ? nlohmann::json(*options.netns) : nullptr},
                           {"netns_inode", static_cast<uint64_t>(netns_inode())},
                           {"lock_dir", state.lock_dir()},
                           {"site_file", options.site_file},
                           {"digest", digest},
                           {"applied_at", now},
                           {"confirm_within_s", *options.confirm_within},
                           {"deadline", now + static_cast<double>(*options.confirm_within)},
                           {"apply_pid", static_cast<int64_t>(::getpid())},
                           {"waiter_pid", 0},
                           {"previous", to_json(previous)},
                           {"gated_ports", gated_ports}};
  // The record first (a waiter that finds none exits), then the waiter, then its pid.
  StateDir::write(path, record);
  try {
    record["waiter_pid"] = spawn_waiter(path, record["token"], home_netns);
    StateDir::write(path, record);
  } catch (...) {
    stop_waiter(record);
    ::unlink(path.c_str());
    throw;
  }
  return record;
}

void disarm_revert(const StateDir& state, const nlohmann::json& pending) {
  ::unlink(state.pending().c_str());
  stop_waiter(pending);
}

Report confirm(const Options& options) {
  Report report;
  try {
    if (options.netns) enter_netns_or_throw(*options.netns);
    const StateDir state = StateDir::of_current_netns(options.lock_dir);
    RunLock lock;
    if (!lock.acquire(state.lock(), options.wait_for_lock)) {
      report.errors.push_back({"", lock.refusal()});
      report.outcome = Outcome::LockHeld;
      return report;
    }
    nlohmann::json pending = read_pending(state);
    if (pending.is_null()) {
      std::string text =
          "nothing to confirm: no apply awaits confirmation in this network "
          "namespace";
      auto last = StateDir::read(state.applied());
      if (last.is_object() && last.value("command", "") == "revert") {
        text += " (the last apply, of " + last.value("site_file", std::string("?")) +
                ", was not confirmed in time and was reverted at " +
                local_time(last.value("at", 0.0)) + ")";
      }
      report.errors.push_back({"", text});
      report.outcome = Outcome::Failed;
      return report;
    }
    report.device = pending.value("device", "");
    report.pending = pending_status(pending);
    bool alive = waiter_alive(pending);
    if (alive && now_epoch() >= pending.value("deadline", 0.0)) {
      report.errors.push_back({"", "too late: the deadline passed at " +
                                       local_time(pending.value("deadline", 0.0)) +
                                       " and the apply is being reverted"});
      report.outcome = Outcome::Failed;
      return report;
    }
    disarm_revert(state, pending);
    report.outcome = Outcome::Ok;
  } catch (const RunError& e) {
    report.errors.push_back({e.path, e.message});
    report.outcome = Outcome::Failed;
  } catch (const std::exception& e) {
    report.errors.push_back({"", e.what()});
    report.outcome = Outcome::Failed;
  }
  return report;
}

int revert_waiter(const std::string& record_path, const std::string& token) {
  ::openlog("etherctl", LOG_PID, LOG_DAEMON);
  auto current = [&] {
    auto record = StateDir::read(record_path);
    return record.is_object() && record.value("token", "") == token ? record : nlohmann::json();
  };
  nlohmann::json record = current();
  // Until the deadline: asleep, waking at least once a second to see whether a confirm
  // removed the record (a confirm also sends SIGTERM, which ends the waiter at once).
  while (!record.is_null()) {
    double left = record.value("deadline", 0.0) - now_epoch();
    if (left <= 0) break;
    std::this_thread::sleep_for(std::chrono::duration<double>(std::min(left, 1.0)));
    record = current();
  }
  if (record.is_null()) return 0;  // confirmed, or the apply failed and was rolled back

  const std::string lock_dir = record.value("lock_dir", "");
  const std::string site = record.value("site_file", "");
  Trace trace{std::getenv("ETHERCTL_TEST_TRACE") != nullptr};
  try {
    register_kinds();
    if (record["netns"].is_string()) enter_netns_or_throw(record["netns"].get<std::string>());
    if (static_cast<uint64_t>(netns_inode()) != record.value("netns_inode", uint64_t{0})) {
      throw RunError{"", "the network namespace is not the one applied to any more"};
    }
    const StateDir state = StateDir::of_current_netns(lock_dir);
    RunLock lock;
    lock.acquire(state.lock(), true);
    record = current();  // under the lock: a confirm may have come first
    if (record.is_null()) return 0;
    trace("revert");
    // Test-only fault injection into the revert (its rollback is tested like an apply's).
    std::optional<size_t> fail_at_step;
    if (const char* step = std::getenv("ETHERCTL_TEST_REVERT_FAIL_AT_STEP")) {
      fail_at_step = std::strtoul(step, nullptr, 10);
    }
    Report report = revert(record, state, fail_at_step, trace);
    nlohmann::json errors = nlohmann::json::array();
    for (const auto& e : report.errors) errors.push_back(e.message);
    nlohmann::json left_out = nlohmann::json::array();
    std::string left_out_text;
    for (const auto& w : report.warnings) {
      left_out.push_back(w.message);
      left_out_text += " " + w.message + ";";
    }
    StateDir::write(state.applied(),
                    {{"device", report.device},
                     {"command", "revert"},
                     {"digest", ""},
                     {"site_file", site},
                     {"reverted_digest", record.value("digest", "")},
                     {"outcome", report.outcome == Outcome::Ok ? "reverted" : "revert failed"},
                     {"changes", report.plan.changes.size()},
                     {"errors", errors},
                     {"left_out", left_out},
                     {"at", now_epoch()}});
    ::unlink(record_path.c_str());
    if (report.outcome == Outcome::Ok) {
      ::syslog(LOG_WARNING,
               "no confirmation within %lld s: reverted the apply of %s (device %s, %zu "
               "changes)%s%s",
               static_cast<long long>(record.value("confirm_within_s", int64_t{0})), site.c_str(),
               report.device.c_str(), report.plan.changes.size(),
               left_out_text.empty() ? "" : "; left out:", left_out_text.c_str());
      return 0;
    }
    std::string text;
    for (const auto& e : report.errors) text += " " + e.message + ";";
    ::syslog(LOG_ERR, "no confirmation: the revert of the apply of %s (device %s) failed%s:%s",
             site.c_str(), report.device.c_str(), report.rolled_back ? " and was rolled back" : "",
             text.c_str());
    return 1;
  } catch (const RunError& e) {
    ::syslog(LOG_ERR, "cannot revert the apply of %s: %s", site.c_str(), e.message.c_str());
  } catch (const std::exception& e) {
    ::syslog(LOG_ERR, "cannot revert the apply of %s: %s", site.c_str(), e.what());
  }
  ::unlink(record_path.c_str());
  return 1;
}

}  // namespace etherctl::engine
