#include "agent/agent.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <ctime>
#include <memory>
#include <optional>
#include <set>

#include "agent/events.hpp"
#include "agent/failover.hpp"
#include "agent/http.hpp"
#include "agent/metrics.hpp"
#include "agent/system.hpp"
#include "engine/engine.hpp"
#include "engine/state_dir.hpp"
#include "model/site.hpp"
#include "plan/render.hpp"

namespace etherctl::agent {

namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

enum class Trigger { Start, Event, Periodic, Reload, Retry, AfterFailure, Failover };

const char* trigger_name(Trigger trigger) {
  switch (trigger) {
    case Trigger::Start:
      return "start";
    case Trigger::Event:
      return "kernel event";
    case Trigger::Periodic:
      return "periodic";
    case Trigger::Reload:
      return "reload";
    case Trigger::Retry:
      return "retry";
    case Trigger::AfterFailure:
      return "after a failure";
    case Trigger::Failover:
      return "failover";
  }
  return "?";
}

template <typename... Args>
void log(fmt::format_string<Args...> format, Args&&... args) {
  fmt::print(stderr, "etherctl watch: {}\n", fmt::format(format, std::forward<Args>(args)...));
  std::fflush(stderr);
}

class Agent {
 public:
  explicit Agent(const WatchOptions& options)
      : options_(options),
        signals_(io_, SIGHUP, SIGTERM, SIGINT),
        debounce_timer_(io_),
        periodic_timer_(io_),
        retry_timer_(io_),
        failure_timer_(io_),
        watchdog_timer_(io_),
        failover_({[this] { request_failover_reconcile(); },
                   [](const std::string& line) { log("{}", line); }}) {}

  int run();

 private:
  bool load(const char* why);
  void wait_for_events();
  void on_events();
  void wait_for_signal();
  void arm_periodic();
  void arm_watchdog(std::chrono::microseconds every);
  // A reconcile that failed (twice: see reconcile()) may wait for something no kernel event
  // announces, such as charon coming up: run again after 1 s, then 2, 4... at most every
  // interval(), until one succeeds. Kernel events do not start reconciles meanwhile.
  void arm_retry_after_failure(Trigger trigger);
  // Milliseconds until that retry, when one is pending.
  std::optional<int64_t> next_retry_after_failure() const;
  bool reconcile(Trigger trigger);  // true when it succeeded
  // From the election thread: a reconcile with the role as it is then, on this thread (one
  // pending at a time).
  void request_failover_reconcile();
  void configure_failover(const char* why);
  void stop();
  HttpResponse handle(const std::string& target);
  engine::Options engine_options(engine::Command command, bool resolve) const;
  std::chrono::milliseconds interval() const;

  WatchOptions options_;
  asio::io_context io_;
  asio::signal_set signals_;
  asio::steady_timer debounce_timer_, periodic_timer_, retry_timer_, failure_timer_,
      watchdog_timer_;
  static constexpr std::chrono::milliseconds kFirstRetryAfterFailure{1000};
  std::chrono::milliseconds failure_delay_ = kFirstRetryAfterFailure;
  bool failure_retry_armed_ = false;
  std::unique_ptr<EventSocket> events_;
  std::unique_ptr<asio::posix::stream_descriptor> event_descriptor_;
  std::unique_ptr<HttpServer> http_;
  engine::LoadedSite site_;
  std::set<model::IpAddress> member_addresses_;  // whose neighbour entries matter
  bool has_pools_ = false;
  bool event_reconcile_pending_ = false;
  std::string held_back_;                      // the revert the agent respects, as last logged
  std::chrono::milliseconds retry_delay_{20};  // after a held lock; doubles up to 1 s
  bool lock_wait_logged_ = false;
  bool ready_ = false;
  AgentStats stats_;
  engine::Report last_;
  bool have_last_ = false;
  std::atomic<bool> failover_reconcile_pending_{false};
  FailoverUnit failover_;  // a unit of a failover group: the election (its own thread), the role
};

engine::Options Agent::engine_options(engine::Command command, bool resolve) const {
  engine::Options o;
  o.command = command;
  o.site_file = options_.site_file;
  o.device = options_.device;
  o.lock_dir = options_.lock_dir;
  o.resolve_neighbours = resolve;
  o.respect_revert = true;  // never undo a revert of an unconfirmed apply (confirm.hpp)
  o.preloaded_site = site_.site;
  o.preloaded_sha256 = site_.sha256;
  o.role = failover_.role();
  if (command == engine::Command::Apply) o.join_gate = failover_.join_gate();
  // The agent never waits for IPsec SAs (apply does, up to --ipsec-wait): while the peer is
  // away each reconcile would hold the lock, and the repair of drift, a pool's re-weighting or
  // a pair's next transition, behind an IKE negotiation. charon negotiates on; `status` and
  // /metrics show it, and each reconcile restarts a connection charon gave up.
  o.ipsec_wait = std::chrono::milliseconds(0);
  return o;  // no netns: the agent entered it once, at start
}

// The failover duties of the device, at start and after every reload (it may have joined or
// left a group). Its files live in the namespace's state directory.
void Agent::configure_failover(const char* why) {
  std::string error;
  const model::Device* device =
      model::select_device(*site_.site, options_.device, engine::host_name(), &error);
  if (!device) return;  // the reconcile reports it
  const std::string dir = engine::StateDir::of_current_netns(options_.lock_dir).failover_dir();
  const bool was = failover_.configured();
  failover_.configure(site_.site, device->name, dir);
  if (was && !failover_.configured())
    log("{}: device {} left its failover group", why, device->name);
}

// Reads the site file. At start a bad file is fatal; later it keeps the running one.
bool Agent::load(const char* why) {
  engine::LoadedSite loaded = engine::load(options_.site_file);
  if (!loaded.site) {
    for (const auto& p : loaded.problems) {
      log("{}: {}: {}", options_.site_file, p.path.empty() ? "(file)" : p.path, p.message);
    }
    log("{}: {} is invalid ({} problem{}); {}", why, options_.site_file, loaded.problems.size(),
        loaded.problems.size() == 1 ? "" : "s",
        site_.site ? "keeping the configuration in force" : "not starting");
    return false;
  }
  site_ = std::move(loaded);
  member_addresses_.clear();
  has_pools_ = false;
  for (const auto& [name, device] : site_.site->devices) {
    if (options_.device && name != *options_.device) continue;
    for (const auto& [pool_name, pool] : device.pools) {
      has_pools_ = true;
      for (const auto& [key, member] : pool.members) member_addresses_.insert(member.address);
    }
  }
  return true;
}

std::chrono::milliseconds Agent::interval() const {
  auto every = options_.interval;
  for (const auto& [name, device] : site_.site->devices) {
    if (options_.device && name != *options_.device) continue;
    for (const auto& [pool_name, pool] : device.pools) {
      if (pool.monitor)
        every = std::min(every, std::chrono::milliseconds(pool.monitor->interval * 1000));
    }
  }
  return every;
}

bool Agent::reconcile(Trigger trigger) {
  const auto started = Clock::now();
  engine::Options options;
  engine::Report report;
  for (bool again = false;; again = true) {
    // Probes for unresolved members only on the timer's schedule: a member that never answers
    // would otherwise wake every event-driven run again with its probe's own notifications.
    options = engine_options(engine::Command::Apply,
                             trigger != Trigger::Event && trigger != Trigger::Failover);
    // A role change waits for a run that holds the lock rather than retrying later.
    options.wait_for_lock = trigger == Trigger::Failover;
    report = engine::run(options);
    // A run that failed may have looked at the kernel in the middle of a change made behind
    // its back: link and address dumps do not take the RTNL lock, so a link being deleted can
    // be listed without its addresses, and the run then fails on "No such device". Look again,
    // once, before calling it a failure (the first run rolled back what it had changed).
    if (report.outcome != engine::Outcome::Failed || again) break;
    ++stats_.reconcile_reruns;
    log("reconcile ({}): {}; looking at the kernel again", trigger_name(trigger),
        report.errors.empty() ? "failed" : report.errors.front().message);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  stats_.reconciles[static_cast<size_t>(report.outcome)] += 1;
  stats_.last_duration_seconds = seconds;
  stats_.duration_seconds_sum += seconds;
  stats_.last_reconcile_unix = std::time(nullptr);
  stats_.digest = report.digest.empty() ? stats_.digest : report.digest;

  switch (report.outcome) {
    case engine::Outcome::Ok:
      stats_.last_success_unix = stats_.last_reconcile_unix;
      failure_timer_.cancel();
      failure_retry_armed_ = false;
      failure_delay_ = kFirstRetryAfterFailure;
      stats_.in_sync = report.held_back.empty();
      if (!report.held_back.empty()) {
        if (report.held_back != held_back_) log("{}", report.held_back);  // once, not each run
        held_back_ = report.held_back;
        break;
      }
      held_back_.clear();
      if (report.changed()) {
        stats_.changes_applied += report.plan.changes.size();
        std::string what;
        for (const auto& c : plan::changes_json(report.plan)) {
          what += fmt::format("; {} {} {}", c.value("op", ""), c.value("kind", ""),
                              c.value("name", ""));
          if (c.contains("before") && c.contains("after")) {
            what += fmt::format(" {} -> {}", c["before"].dump(), c["after"].dump());
          }
        }
        log("reconcile ({}): {} change{} in {:.0f} ms{}", trigger_name(trigger),
            report.plan.changes.size(), report.plan.changes.size() == 1 ? "" : "s", seconds * 1000,
            what);
      }
      break;
    case engine::Outcome::LockHeld:
      // cron, an operator or a monitoring `plan` holds the lock: try again soon, whatever
      // woke us, backing off from 20 ms to 1 s while it stays held.
      if (retry_delay_ >= std::chrono::milliseconds(1000) && !lock_wait_logged_) {
        // Once per wait: a pending confirmation can hold runs off for hours.
        log("reconcile ({}): {}; retrying every second", trigger_name(trigger),
            report.errors.empty() ? "lock held" : report.errors.front().message);
        lock_wait_logged_ = true;
      }
      retry_timer_.expires_after(retry_delay_);
      retry_delay_ = std::min(retry_delay_ * 2, std::chrono::milliseconds(1000));
      retry_timer_.async_wait([this](boost::system::error_code e) {
        if (!e) reconcile(Trigger::Retry);
      });
      break;
    case engine::Outcome::Failed:
    case engine::Outcome::Invalid:
      stats_.in_sync = false;
      for (const auto& e : report.errors) {
        log("reconcile ({}) failed: {}{}", trigger_name(trigger),
            e.path.empty() ? "" : e.path + ": ", e.message);
      }
      if (report.outcome == engine::Outcome::Failed) arm_retry_after_failure(trigger);
      break;
  }
  if (report.outcome != engine::Outcome::LockHeld) {
    retry_delay_ = std::chrono::milliseconds(20);
    lock_wait_logged_ = false;
    last_ = std::move(report);
    have_last_ = true;
  }
  if (ready_) {
    notify(fmt::format(
        "STATUS={}, {} reconciles, {} changes made", stats_.in_sync ? "in sync" : "NOT in sync",
        stats_.reconciles[0] + stats_.reconciles[1] + stats_.reconciles[2] + stats_.reconciles[3],
        stats_.changes_applied));
  }
  const bool succeeded = have_last_ && last_.outcome == engine::Outcome::Ok && last_.errors.empty();
  failover_.after_reconcile(succeeded, options.role);
  return succeeded;
}

void Agent::request_failover_reconcile() {
  if (failover_reconcile_pending_.exchange(true)) return;
  asio::post(io_, [this] {
    failover_reconcile_pending_ = false;
    reconcile(Trigger::Failover);
  });
}

void Agent::wait_for_events() {
  event_descriptor_->async_wait(asio::posix::stream_descriptor::wait_read,
                                [this](boost::system::error_code error) {
                                  if (error) return;  // cancelled: stopping
                                  on_events();
                                  wait_for_events();
                                });
}

void Agent::on_events() {
  EventBatch batch = events_->drain();
  for (size_t i = 0; i < kEventKinds; ++i) stats_.events[i] += batch.counts[i];
  if (batch.overrun) ++stats_.event_overruns;
  // Links, addresses and routes: drift of owned objects. Neighbours and the FDB only move
  // pool members, and only members' own neighbour entries matter.
  bool relevant = batch.overrun || batch.relevant_count(EventKind::Link) ||
                  batch.relevant_count(EventKind::Address) ||
                  batch.relevant_count(EventKind::Route) || batch.relevant_count(EventKind::Tc) ||
                  (has_pools_ && batch.count(EventKind::Fdb));
  for (const auto& address : batch.neighbours) {
    if (member_addresses_.count(address)) relevant = true;
  }
  // After a failure the retry's timer decides: the failed run's rollback made events of its
  // own, and reacting to them would create and delete the same objects in a loop.
  if (!relevant || event_reconcile_pending_ || failure_retry_armed_) return;
  event_reconcile_pending_ = true;
  debounce_timer_.expires_after(options_.debounce);
  debounce_timer_.async_wait([this](boost::system::error_code e) {
    event_reconcile_pending_ = false;
    if (!e) reconcile(Trigger::Event);
  });
}

void Agent::arm_periodic() {
  periodic_timer_.expires_after(interval());
  periodic_timer_.async_wait([this](boost::system::error_code e) {
    if (e) return;
    reconcile(Trigger::Periodic);
    arm_periodic();
  });
}

void Agent::arm_retry_after_failure(Trigger trigger) {
  if (failure_retry_armed_) return;  // an earlier failure's retry comes first
  failure_retry_armed_ = true;
  const auto delay = std::min(failure_delay_, interval());
  log("reconcile ({}): next try in {:.0f} s", trigger_name(trigger),
      std::chrono::duration<double>(delay).count());
  failure_delay_ = std::min(failure_delay_ * 2, interval());
  failure_timer_.expires_after(delay);
  failure_timer_.async_wait([this](boost::system::error_code e) {
    if (e) return;
    failure_retry_armed_ = false;
    reconcile(Trigger::AfterFailure);
  });
}

std::optional<int64_t> Agent::next_retry_after_failure() const {
  if (!failure_retry_armed_) return std::nullopt;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      failure_timer_.expiry() - asio::steady_timer::clock_type::now());
  return std::max<int64_t>(0, left.count());
}

void Agent::arm_watchdog(std::chrono::microseconds every) {
  watchdog_timer_.expires_after(every);
  watchdog_timer_.async_wait([this, every](boost::system::error_code e) {
    if (e) return;
    notify("WATCHDOG=1");
    arm_watchdog(every);
  });
}

void Agent::wait_for_signal() {
  signals_.async_wait([this](boost::system::error_code error, int signal) {
    if (error) return;
    if (signal == SIGHUP) {
      notify("RELOADING=1");
      if (load("reload")) {
        ++stats_.reloads_ok;
        log("reloaded {} ({})", options_.site_file, site_.sha256);
        try {
          configure_failover("reload");
        } catch (const std::exception& e) {
          log("reload: {}", e.what());
        }
        reconcile(Trigger::Reload);
        arm_periodic();  // the interval may have changed
      } else {
        ++stats_.reloads_failed;
      }
      notify("READY=1");
      wait_for_signal();
      return;
    }
    log("{}: stopping", signal == SIGTERM ? "SIGTERM" : "SIGINT");
    stop();
  });
}

void Agent::stop() {
  notify("STOPPING=1");
  // Leave the segments, then the election.
  failover_.stop([this] { reconcile(Trigger::Failover); });
  boost::system::error_code ignored;
  signals_.cancel(ignored);
  debounce_timer_.cancel();
  periodic_timer_.cancel();
  retry_timer_.cancel();
  failure_timer_.cancel();
  watchdog_timer_.cancel();
  if (event_descriptor_) event_descriptor_->cancel(ignored);
  if (http_) http_->stop();
  io_.stop();
}

HttpResponse Agent::handle(const std::string& target) {
  const std::string path = target.substr(0, target.find('?'));
  if (path == "/metrics") {
    return {200, "text/plain; version=0.0.4; charset=utf-8",
            render_metrics(stats_, have_last_ ? last_.members : nlohmann::json::array(),
                           engine::tunnel_counters()) +
                failover_.metrics()};
  }
  if (path == "/healthz") {
    if (stats_.in_sync) return {200, "text/plain; charset=utf-8", "ok\n"};
    std::string why = "not in sync";
    if (have_last_ && !last_.errors.empty()) why += ": " + last_.errors.front().message;
    if (const auto in = next_retry_after_failure()) why += fmt::format("; next try in {} ms", *in);
    return {503, "text/plain; charset=utf-8", why + "\n"};
  }
  if (path == "/status") {
    // A fresh read of the kernel (under the lock, like `etherctl status`), plus the agent.
    engine::Report now = engine::run(engine_options(engine::Command::Status, false));
    uint64_t reconciles = 0;
    for (auto n : stats_.reconciles) reconciles += n;
    nlohmann::json agent = {
        {"pid", getpid()},
        {"site_file", options_.site_file},
        {"site_sha256", site_.sha256},
        {"digest", stats_.digest},
        {"in_sync", stats_.in_sync},
        {"started", stats_.started_unix},
        {"reconciles", reconciles},
        {"reconcile_failures", stats_.reconciles[1]},
        {"reconcile_reruns", stats_.reconcile_reruns},
        {"changes_applied", stats_.changes_applied},
        {"last_reconcile", stats_.last_reconcile_unix},
        {"last_reconcile_duration_ms", stats_.last_duration_seconds * 1000},
        {"reloads", {{"ok", stats_.reloads_ok}, {"failed", stats_.reloads_failed}}},
        {"interval_ms", interval().count()},
        {"next_try_after_failure_ms", nullptr},
    };
    if (const auto in = next_retry_after_failure()) agent["next_try_after_failure_ms"] = *in;
    nlohmann::json body = {{"agent", agent}};
    nlohmann::json failover = failover_.status();
    if (!failover.is_null()) body["failover"] = failover;
    if (have_last_) body["last_reconcile"] = engine::report_json(last_, engine::Command::Apply);
    body["now"] = engine::report_json(now, engine::Command::Status);
    return {now.outcome == engine::Outcome::LockHeld ? 503u : 200u, "application/json",
            body.dump(2) + "\n"};
  }
  return {404, "text/plain; charset=utf-8", "not found: try /metrics, /status or /healthz\n"};
}

int Agent::run() {
  stats_.started_unix = std::time(nullptr);
  try {
    if (options_.netns) engine::enter_netns(*options_.netns);
    if (!load("start")) return 1;
    // Subscribe before the first reconcile, so no change after it can go unseen.
    events_ = std::make_unique<EventSocket>();
    event_descriptor_ = std::make_unique<asio::posix::stream_descriptor>(io_, dup(events_->fd()));
    if (!options_.listen.empty() && options_.listen != "none") {
      http_ = std::make_unique<HttpServer>(io_, parse_listen_address(options_.listen),
                                           [this](const std::string& t) { return handle(t); });
    }
    // Before the first reconcile: it applies the role the election implies now.
    configure_failover("start");
    if (options_.drop_capabilities) {
      auto held = drop_capabilities(failover_.configured());
      std::string names;
      for (const auto& n : held) names += (names.empty() ? "" : ",") + n;
      log("capabilities: {}", names.empty() ? "none" : names);
    }
    failover_.start();  // in the namespace, with the capabilities kept: a new thread inherits both
  } catch (const std::exception& e) {
    log("cannot start: {}", e.what());
    return 1;
  }

  reconcile(Trigger::Start);
  if (last_.outcome == engine::Outcome::Invalid) return 1;  // e.g. no such device in the file
  if (http_) {
    const auto endpoint = http_->local_endpoint();
    log("listening on http://{}:{}/ (metrics, status, healthz)",
        endpoint.address().is_v6() ? "[" + endpoint.address().to_string() + "]"
                                   : endpoint.address().to_string(),
        endpoint.port());
    http_->start();
  }
  log("watching device {} from {} ({}); full reconcile every {} ms", last_.device,
      options_.site_file, site_.sha256, interval().count());
  wait_for_events();
  wait_for_signal();
  arm_periodic();
  if (uint64_t usec = watchdog_usec()) arm_watchdog(std::chrono::microseconds(usec / 2));
  ready_ = true;
  notify("READY=1");
  io_.run();
  return 0;
}

}  // namespace

int watch(const WatchOptions& options) {
  Agent agent(options);
  return agent.run();
}

}  // namespace etherctl::agent
