#include "agent/failover.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "failover/marker.hpp"
#include "failover/process.hpp"
#include "kernel/announce.hpp"
#include "kernel/detail.hpp"
#include "kernel/inet.hpp"
#include "kernel/netlink.hpp"
#include "model/failover.hpp"

namespace etherctl::agent {

namespace asio = boost::asio;
using failover::Clock;
using std::chrono::milliseconds;

namespace {

double unix_now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// The election's verdict as the planner's role (lib/failover is pure and does not know plan).
plan::Role plan_role(failover::Role role) {
  return role == failover::Role::Active ? plan::Role::Active : plan::Role::Standby;
}

std::string role_text(std::optional<plan::Role> role) {
  return !role ? "unknown" : *role == plan::Role::Active ? "active" : "standby";
}

std::string address_text(uint32_t address) {
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &address, text, sizeof text);
  return text;
}

// The device's fixed IPv4 self IP on `vlan` (network order), 0 when it has none (validation
// requires one on the election VLAN of both units).
uint32_t fixed_ipv4_on(const model::Device& device, const std::string& vlan) {
  for (const auto& [name, self_ip] : device.self_ips) {
    const model::IpAddress& address = self_ip.address.address;
    if (self_ip.vlan != vlan || self_ip.floating || address.family != 4) continue;
    uint32_t out = 0;
    std::memcpy(&out, address.bytes.data(), sizeof out);
    return out;
  }
  return 0;
}

// Announcements after a takeover: once the segments are joined (round 1), then 1 s and 5 s
// later, for neighbours that missed one (a frame lost, a port not forwarding yet).
constexpr std::array<milliseconds, 2> kAnnounceRepeats = {milliseconds(1000), milliseconds(4000)};

}  // namespace

std::optional<plan::Role> RoleGate::role() const {
  std::lock_guard lock(mutex_);
  return role_;
}

void RoleGate::set(std::optional<plan::Role> role, const std::function<void()>& while_locked) {
  std::lock_guard lock(mutex_);
  role_ = role;
  if (published_) {
    published_->write(role_text(role), while_locked);
  } else if (while_locked) {
    while_locked();
  }
}

void RoleGate::publish(const std::string& path) {
  std::lock_guard lock(mutex_);
  published_ = std::make_unique<failover::PublishedRole>(path);
  published_->write(role_text(role_), {});
}

bool RoleGate::join_if_active(const std::function<void()>& join) const {
  std::lock_guard lock(mutex_);
  if (role_ != plan::Role::Active) return false;
  join();
  return true;
}

FailoverUnit::FailoverUnit(Hooks hooks)
    : hooks_(std::move(hooks)), recheck_timer_(io_), announce_timer_(io_), tap_retry_timer_(io_) {
  // Every failover line carries the wall-clock time in milliseconds: the order of the two
  // units' steps in a transition is read from their logs side by side.
  hooks_.log = [log = std::move(hooks_.log)](const std::string& line) {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm local{};
    localtime_r(&ts.tv_sec, &local);
    log(fmt::format("{:02}:{:02}:{:02}.{:03} {}", local.tm_hour, local.tm_min, local.tm_sec,
                    ts.tv_nsec / 1000000, line));
  };
}

FailoverUnit::~FailoverUnit() {
  if (thread_.joinable()) {
    io_.stop();
    thread_.join();
  }
  release();
}

void FailoverUnit::start() {
  thread_ = std::thread([this] {
    // keepalived's own nice value (keepalived.cpp): the thread that must see keepalived's
    // transitions is not starved more than keepalived is.
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), -10) != 0) {
      hooks_.log(fmt::format("failover: election thread at nice -10: {}", std::strerror(errno)));
    }
    const auto work = asio::make_work_guard(io_);
    io_.run();
  });
}

void FailoverUnit::configure(std::shared_ptr<const model::Site> site, const std::string& device,
                             const std::string& dir) {
  on_thread([&] { configure_here(std::move(site), device, dir); });
}

bool FailoverUnit::configured() {
  return on_thread([this] { return group_ != nullptr; });
}

std::function<bool(const std::function<void()>&)> FailoverUnit::join_gate() const {
  return [this](const std::function<void()>& join) { return gate_.join_if_active(join); };
}

nlohmann::json FailoverUnit::status() {
  return on_thread([this] { return status_here(); });
}

std::string FailoverUnit::metrics() {
  return on_thread([this] { return metrics_here(); });
}

void FailoverUnit::configure_here(std::shared_ptr<const model::Site> site,
                                  const std::string& device, const std::string& dir) {
  site_ = std::move(site);
  auto it = site_->devices.find(device);
  device_ = it == site_->devices.end() ? nullptr : &it->second;
  const model::FailoverGroup* group =
      device_ ? model::failover_group_of(*site_, *device_) : nullptr;
  if (!group) {
    release();
    return;
  }
  const bool first = group_ == nullptr;
  const bool new_group = !first && (group->name != group_->name ||
                                    group->virtual_router_id != group_->virtual_router_id ||
                                    device_->ifname_of(group->vlan) != tap_interface_);
  group_ = group;
  if (lock_fd_ < 0 || files_.dir != dir) {
    files_ = failover::FailoverFiles{dir};
    files_.create();
    lock_fd_ = open(files_.agent_lock().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd_ < 0 || flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      if (lock_fd_ >= 0) close(lock_fd_);
      lock_fd_ = -1;
      group_ = nullptr;
      throw std::runtime_error("failover: " + files_.agent_lock() + ": " +
                               (error == EWOULDBLOCK ? std::string("another etherctl watch runs "
                                                                   "for this network namespace")
                                                     : std::strerror(error)));
    }
    // Other processes (the revert of an unconfirmed apply) join gated ports only while this
    // file says active; without it they join none (fail closed), so a failure is only logged.
    try {
      gate_.publish(files_.gate());
    } catch (const std::exception& e) {
      hooks_.log(fmt::format("failover: {}", e.what()));
    }
  }
  timing_.advert = milliseconds(group_->advert_centiseconds * 10);
  const model::Device* peer = model::failover_peer(*site_, *device_);
  timing_.peer_priority = peer && peer->failover ? peer->failover->priority : 100;
  timing_.priority = device_->failover ? device_->failover->priority : 100;
  peer_fixed_address_ = peer ? fixed_ipv4_on(*peer, group_->vlan) : 0;
  if (first || new_group) {
    tap_descriptor_.reset();
    tap_.reset();
    view_ = {};
    kernel::Netlink netlink;
    view_.master = failover::marker_present(netlink, group_->virtual_router_id);
    view_.master_since = Clock::now();
    keepalived_pid_ = 0;
    pidfd_.reset();
    watch_keepalived();
    open_tap();
    signal_descriptor_.reset();
    signal_.reset();
    open_signal();
    open_address_events();
  }
  if (!first) {
    evaluate("reload");
    return;
  }
  // The role the election implies now, applied by the agent's first reconcile (an agent that
  // restarts adopts a running keepalived and keeps the role it finds).
  const failover::Verdict verdict = failover::decide(view_, timing_, Clock::now());
  gate_.set(plan_role(verdict.role));
  cause_ = verdict.reason;
  since_ = unix_now();
  arm_recheck(verdict.recheck_at);
  hooks_.log(fmt::format("failover: group {} ({}), {} at start: {}", group_->name, device_->name,
                         role_text(gate_.role()), cause_));
  write_record();
}

void FailoverUnit::release() {
  recheck_timer_.cancel();
  announce_timer_.cancel();
  tap_retry_timer_.cancel();
  pidfd_.reset();
  tap_descriptor_.reset();
  tap_.reset();
  signal_descriptor_.reset();
  signal_.reset();
  address_descriptor_.reset();
  address_events_.reset();
  if (lock_fd_ >= 0) close(lock_fd_);
  lock_fd_ = -1;
  group_ = nullptr;
  gate_.set(std::nullopt);
  applying_.reset();
  ready_ = false;
}

void FailoverUnit::open_address_events() {
  address_descriptor_.reset();
  address_events_.reset();
  try {
    address_events_ = std::make_unique<EventSocket>(RTMGRP_IPV4_IFADDR);
    address_descriptor_ =
        std::make_unique<asio::posix::stream_descriptor>(io_, dup(address_events_->fd()));
    wait_for_address_events();
  } catch (const std::exception& e) {
    // Without it only the reconciles' re-read of the marker sees keepalived's transitions.
    hooks_.log(fmt::format("failover: address events: {}", e.what()));
  }
}

void FailoverUnit::wait_for_address_events() {
  address_descriptor_->async_wait(asio::posix::stream_descriptor::wait_read,
                                  [this](boost::system::error_code error) {
                                    if (error || !address_events_) return;
                                    const EventBatch batch = address_events_->drain();
                                    on_host_addresses(batch.host_addresses);
                                    if (batch.overrun) resync_marker();
                                    if (address_descriptor_) wait_for_address_events();
                                  });
}

void FailoverUnit::resync_marker() {
  if (!group_) return;
  bool present = view_.master;
  try {
    kernel::Netlink netlink;
    present = failover::marker_present(netlink, group_->virtual_router_id);
  } catch (const std::exception& e) {
    hooks_.log(fmt::format("failover: reading keepalived's marker address: {}", e.what()));
  }
  if (present == view_.master) return;
  hooks_.log(
      fmt::format("failover: keepalived's marker address is {} (its event not read yet, "
                  "or lost)",
                  present ? "present" : "gone"));
  on_host_addresses({{failover::marker_ip(group_->virtual_router_id), present}});
}

void FailoverUnit::after_reconcile(bool succeeded, std::optional<plan::Role> applied) {
  asio::post(io_, [this, succeeded, applied] { after_reconcile_here(succeeded, applied); });
}

void FailoverUnit::after_reconcile_here(bool succeeded, std::optional<plan::Role> applied) {
  if (!group_) return;
  watch_keepalived();
  if (!tap_) open_tap();
  if (!signal_) open_signal();
  if (succeeded && applied == plan::Role::Standby) segments_left_ = true;
  if (succeeded && !ready_) {
    // keepalived may take part in the election from now on (its track_file).
    try {
      files_.write_ready(true);
      ready_ = true;
      hooks_.log("failover: ready; keepalived takes part in the election");
    } catch (const std::exception& e) {
      hooks_.log(fmt::format("failover: {}", e.what()));
    }
  }
  if (applying_ && applied == applying_->first && gate_.role() == applied) {
    // The reconcile that applied the last transition's role (one that started before it
    // applied the old role, or was refused a join, is not it: the next one is).
    const double applied_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - applying_->second).count();
    applying_.reset();
    last_transition_["applied_ms"] = applied_ms;
    last_transition_["applied"] = succeeded;
    hooks_.log(fmt::format("failover: {} applied in {:.1f} ms{}", role_text(applied), applied_ms,
                           succeeded ? "" : " (with errors: see above)"));
    if (applied == plan::Role::Active) announce(0);
    if (applied == plan::Role::Standby) say_standby();  // again: the fast step may have failed
  }
  // keepalived may be back (a reconcile starts it): see whether that changes anything.
  resync_marker();  // the kernel's word, in case an address event was lost
  evaluate("reconcile");
  write_record();  // status reads keepalived's state (started, found) from the record
}

void FailoverUnit::on_host_addresses(
    const std::vector<std::pair<model::IpAddress, bool>>& changes) {
  if (!group_) return;
  const model::IpAddress marker = failover::marker_ip(group_->virtual_router_id);
  bool changed = false;
  for (const auto& [address, added] : changes) {
    if (!(address == marker) || view_.master == added) continue;
    view_.master = added;
    if (added) view_.master_since = Clock::now();
    changed = true;
  }
  if (changed) evaluate(view_.master ? "keepalived became master" : "keepalived left master");
}

void FailoverUnit::stop(const std::function<void()>& reconcile_as_standby) {
  const bool leaves = on_thread([this] {
    if (!group_) return false;
    stopping_ = true;  // no transition from now on
    const std::optional<plan::Role> from = gate_.role();
    if (from == plan::Role::Standby) return false;
    cause_ = "the agent stops";
    since_ = unix_now();
    ++transitions_;
    last_transition_ = {
        {"from", role_text(from)}, {"to", "standby"}, {"cause", cause_}, {"at", since_}};
    hooks_.log(fmt::format("failover: {} -> standby: {}", role_text(from), cause_));
    gate_.set(plan::Role::Standby, [this] { leave_segments(); });
    return true;
  });
  if (leaves) reconcile_as_standby();  // on the caller's (the agent's) thread
  on_thread([this] {
    if (!group_) return;
    segments_left_ = true;  // the fast step or the reconcile took the ports out
    say_standby();
    // Out of the segments first, then out of the election: keepalived goes to FAULT and
    // resigns with a priority-0 advert, so the peer takes over after its skew time.
    try {
      files_.write_ready(false);
    } catch (const std::exception& e) {
      hooks_.log(fmt::format("failover: {}", e.what()));
    }
    ready_ = false;
    write_record();
    release();
  });
}

void FailoverUnit::evaluate(const char* trigger) {
  if (!group_ || stopping_) return;
  // What the tap holds first: a timer (own adverts missing?) that fires while adverts wait
  // unread, after a long reconcile or a late wake-up on a busy host, must not see a hang.
  drain_tap();
  drain_signal();
  const auto now = Clock::now();
  const failover::Verdict verdict = failover::decide(view_, timing_, now);
  track_split_brain(verdict);
  arm_recheck(verdict.recheck_at);
  // `status` reads the election as the record says it: rewrite it when that changed (the
  // peer started or stopped advertising, keepalived came or went), not on every advert.
  const bool peer_master = view_.peer_advert && now - *view_.peer_advert < timing_.quiet_after();
  const std::string election =
      fmt::format("{}{}{}", peer_master, view_.keepalived_running, view_.master);
  if (election != recorded_election_) {
    recorded_election_ = election;
    write_record();
  }
  if (plan_role(verdict.role) != gate_.role()) {
    transition(verdict);
  } else if (std::string(trigger) == "keepalived exited") {
    // No change of role, but keepalived must run again: the reconcile starts it.
    hooks_.reconcile();
  }
}

void FailoverUnit::transition(const failover::Verdict& verdict) {
  const std::optional<plan::Role> from = gate_.role();
  const plan::Role to = plan_role(verdict.role);
  cause_ = verdict.reason;
  since_ = unix_now();
  ++transitions_;
  last_transition_ = {
      {"from", role_text(from)}, {"to", role_text(to)}, {"cause", cause_}, {"at", since_}};
  hooks_.log(fmt::format("failover: {} -> {}: {}", role_text(from), role_text(to), cause_));
  applying_ = {to, Clock::now()};
  if (to == plan::Role::Standby) {
    // Block first, under the gate's lock: from here on no reconcile joins a gated port
    // (engine::Options::join_gate), also one that runs now and planned as active.
    gate_.set(to, [this] { leave_segments(); });
    say_standby();
  } else {
    segments_left_ = false;
    gate_.set(to);
  }
  write_record();
  // The agent's thread does the rest (the floating addresses, the joins of an active unit)
  // when it is free; after_reconcile says when it is done.
  hooks_.reconcile();
}

int remove_gated_ports(const model::Site& site, const model::Device& device) {
  // The gated ports of the active role's plan (one rule, in plan::desired_objects). A port that
  // is not in its bridge already is left alone by the kernel (IFLA_MASTER 0 on a link without a
  // master).
  const kernel::KindOps ports = kernel::port_kind();
  kernel::Netlink netlink;
  int removed = 0;
  for (const plan::Object& port : plan::desired_objects(site, device, plan::Role::Active)) {
    if (port.kind != plan::kPort || !port.attrs.value("gated", false)) continue;
    if (if_nametoindex(port.attrs.at("link").get<std::string>().c_str()) == 0) continue;
    ports.remove(netlink, port);
    ++removed;
  }
  return removed;
}

void FailoverUnit::leave_segments() {
  int left = 0;
  try {
    left = remove_gated_ports(*site_, *device_);
    segments_left_ = true;
  } catch (const std::exception& e) {
    // The reconcile that follows retries it, with the rest of the standby role.
    hooks_.log(fmt::format("failover: leaving the segments: {}", e.what()));
  }
  hooks_.log(fmt::format("failover: left the segments ({} ports), before the reconcile", left));
}

void FailoverUnit::track_split_brain(const failover::Verdict& verdict) {
  std::string reason;
  const bool hung = verdict.reason.find("hung") != std::string::npos;
  if (verdict.both_master) {
    reason = "both units act as master: the peer " + view_.peer_address +
             " keeps advertising while keepalived here is MASTER";
  } else if (gate_.role() == plan::Role::Active && (!view_.keepalived_running || hung)) {
    reason = "keepalived " + std::string(hung ? "hung" : "died") +
             " while this unit was active (the peer takes over; without etherctl both would "
             "hold the floating addresses): this unit left the role";
  } else if (split_brain_ && split_brain_reason_.rfind("keepalived", 0) == 0 &&
             (!view_.keepalived_running || hung)) {
    reason = split_brain_reason_;  // lasts until keepalived is healthy again
  }
  if (reason.empty() == !split_brain_) return;
  split_brain_ = !reason.empty();
  if (split_brain_) {
    ++split_brains_;
    split_brain_since_ = unix_now();
    split_brain_reason_ = reason;
    hooks_.log("failover: split brain: " + reason);
  } else {
    hooks_.log("failover: split brain over (" + split_brain_reason_ + ")");
    split_brain_reason_.clear();
  }
  write_record();
}

void FailoverUnit::write_record() {
  if (!group_) return;
  try {
    files_.write_role(status());
  } catch (const std::exception& e) {
    hooks_.log(fmt::format("failover: {}", e.what()));
  }
}

nlohmann::json FailoverUnit::status_here() const {
  if (!group_) return nullptr;
  const auto now = Clock::now();
  auto age_ms = [&](const std::optional<Clock::time_point>& at) -> nlohmann::json {
    if (!at) return nullptr;
    return std::chrono::duration_cast<milliseconds>(now - *at).count();
  };
  const bool peer_master = view_.peer_advert && now - *view_.peer_advert < timing_.quiet_after();
  nlohmann::json peer = {{"state", peer_master ? "master" : "not advertising"},
                         {"last_advert_ms_ago", age_ms(peer_last_seen_)},
                         {"said_standby_ms_ago", age_ms(peer_said_standby_)}};
  if (peer_source_) {
    peer["address"] = address_text(peer_source_);
    peer["priority"] = peer_last_priority_;
  }
  return {{"group", group_->name},
          {"device", device_ ? device_->name : ""},
          {"role", role_text(gate_.role())},
          {"since", since_},
          {"cause", cause_},
          {"transitions", transitions_},
          {"last_transition", last_transition_},
          {"keepalived",
           {{"running", view_.keepalived_running},
            {"pid", keepalived_pid_},
            {"master", view_.master},
            {"last_advert_ms_ago", age_ms(view_.own_advert)},
            {"ready", ready_}}},
          {"peer", peer},
          {"split_brain",
           {{"now", split_brain_},
            {"reason", split_brain_reason_},
            {"since", split_brain_ ? nlohmann::json(split_brain_since_) : nlohmann::json()},
            {"count", split_brains_}}},
          {"agent_pid", getpid()},
          {"updated", unix_now()}};
}

std::string FailoverUnit::metrics_here() const {
  if (!group_) return "";
  const std::string group = "group=\"" + group_->name + "\"";
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  family("etherctl_failover_role", "gauge", "1 for the unit's role in its failover group.");
  for (const char* role : {"active", "standby"}) {
    out += fmt::format("etherctl_failover_role{{{},role=\"{}\"}} {}\n", group, role,
                       role_text(gate_.role()) == role ? 1 : 0);
  }
  const bool peer_master =
      view_.peer_advert && Clock::now() - *view_.peer_advert < timing_.quiet_after();
  const std::pair<const char*, std::pair<const char*, double>> gauges[] = {
      {"etherctl_failover_keepalived_running",
       {"1 while keepalived runs.", view_.keepalived_running ? 1 : 0}},
      {"etherctl_failover_keepalived_master",
       {"1 while keepalived holds the master role (its marker address).", view_.master ? 1 : 0}},
      {"etherctl_failover_peer_master",
       {"1 while the peer advertises as master.", peer_master ? 1 : 0}},
      {"etherctl_failover_split_brain",
       {"1 while both units act as master, or keepalived failed while this unit was active.",
        split_brain_ ? 1 : 0}},
      {"etherctl_failover_last_transition_timestamp_seconds",
       {"When the unit last changed its role.", last_transition_.value("at", 0.0)}},
      {"etherctl_failover_last_transition_apply_seconds",
       {"How long applying the last role change took.",
        last_transition_.value("applied_ms", 0.0) / 1000}},
  };
  for (const auto& [name, help_value] : gauges) {
    family(name, "gauge", help_value.first);
    out += fmt::format("{}{{{}}} {}\n", name, group, help_value.second);
  }
  family("etherctl_failover_transitions_total", "counter", "Role changes of the unit.");
  out += fmt::format("etherctl_failover_transitions_total{{{}}} {}\n", group, transitions_);
  family("etherctl_failover_split_brains_total", "counter", "Split brains seen.");
  out += fmt::format("etherctl_failover_split_brains_total{{{}}} {}\n", group, split_brains_);
  return out;
}

void FailoverUnit::watch_keepalived() {
  pid_t found = 0;
  for (const auto& running : failover::keepalived_here()) {
    if (running.config_file == files_.config()) found = running.pid;
  }
  if (found == 0) {
    if (keepalived_pid_ != 0 || view_.keepalived_running) {
      view_.keepalived_down_reason = fmt::format("keepalived (pid {}) is gone", keepalived_pid_);
    } else if (view_.keepalived_down_reason.empty()) {
      view_.keepalived_down_reason = "not started yet";
    }
    view_.keepalived_running = false;
    keepalived_pid_ = 0;
    pidfd_.reset();
    return;
  }
  view_.keepalived_running = true;
  view_.keepalived_down_reason.clear();
  if (found == keepalived_pid_ && pidfd_) return;
  keepalived_pid_ = found;
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, found, 0));
  if (fd < 0) {
    hooks_.log(fmt::format("failover: pidfd_open({}): {}", found, std::strerror(errno)));
    pidfd_.reset();
    return;
  }
  pidfd_ = std::make_unique<asio::posix::stream_descriptor>(io_, fd);
  wait_for_keepalived_exit();
}

void FailoverUnit::wait_for_keepalived_exit() {
  pidfd_->async_wait(asio::posix::stream_descriptor::wait_read,
                     [this, pid = keepalived_pid_](boost::system::error_code error) {
                       if (error || pid != keepalived_pid_) return;  // cancelled, or replaced
                       view_.keepalived_running = false;
                       view_.keepalived_down_reason =
                           fmt::format("keepalived (pid {}) exited", pid);
                       keepalived_pid_ = 0;
                       pidfd_.reset();
                       hooks_.log("failover: " + view_.keepalived_down_reason);
                       evaluate("keepalived exited");
                     });
}

void FailoverUnit::open_tap() {
  if (!group_ || !device_) return;
  const std::string interface = device_->ifname_of(group_->vlan);
  try {
    tap_ = std::make_unique<failover::AdvertTap>(interface, group_->virtual_router_id);
    tap_opened_at_ = Clock::now();
    ++tap_generation_;
    tap_interface_ = interface;
    tap_descriptor_ = std::make_unique<asio::posix::stream_descriptor>(io_, dup(tap_->fd()));
    wait_for_adverts();
  } catch (const std::exception& e) {
    tap_.reset();
    tap_descriptor_.reset();
    hooks_.log(fmt::format("failover: no advertisement tap yet: {}", e.what()));
  }
}

void FailoverUnit::wait_for_adverts() {
  tap_descriptor_->async_wait(asio::posix::stream_descriptor::wait_read,
                              [this](boost::system::error_code error) {
                                if (error || !tap_) return;
                                if (drain_tap()) evaluate("advert");
                                if (tap_descriptor_) wait_for_adverts();
                              });
}

bool FailoverUnit::drain_tap() {
  if (!tap_) return false;
  std::vector<failover::SeenAdvert> seen;
  try {
    seen = tap_->read();
  } catch (const std::exception& e) {
    // ENETDOWN when the VLAN went down, for one read. Without the tap this unit's own adverts
    // look stopped (hung) once it is master: open it again at once (and after every
    // reconcile while that fails). A tap that fails again within an interval of its opening
    // is on an interface still down (at start, before the first reconcile sets it up): the
    // next one waits an interval, else this thread spins.
    const bool again = Clock::now() - tap_opened_at_ < timing_.advert;
    if (!again) hooks_.log(fmt::format("failover: advertisement tap: {}; reopening", e.what()));
    tap_.reset();
    // Not here: this may run in the descriptor's own handler. A reconcile may open a new tap
    // before the timer's step runs (after_reconcile); the step then leaves that one alone
    // (dropping its descriptor instead left a tap nobody waited on: its adverts were read
    // only when something else evaluated, and a unit stayed standby as MASTER).
    tap_retry_timer_.expires_after(again ? timing_.advert : milliseconds(0));
    tap_retry_timer_.async_wait(
        [this, generation = tap_generation_](boost::system::error_code error) {
          if (error || generation != tap_generation_) return;
          tap_descriptor_.reset();
          if (group_ && !tap_) open_tap();
        });
    return false;
  }
  bool peer_claims = false;
  for (const auto& [advert, outgoing, at] : seen) {
    if (outgoing) {
      view_.own_advert = at;
      continue;
    }
    if (advert.priority > 0) {
      view_.peer_master_advert = at;
      peer_claims = true;
    }
    peer_source_ = advert.source;
    peer_last_priority_ = advert.priority;
    peer_last_seen_ = at;
    if (advert.priority == 0) {
      view_.peer_advert.reset();  // it resigns: no need to wait for it
    } else {
      if (!view_.peer_advert || at - *view_.peer_advert >= timing_.quiet_after()) {
        view_.peer_claim_since = at;  // a new claim (a preemption starts one)
      }
      view_.peer_advert = at;
      view_.peer_advert_priority = advert.priority;
      view_.peer_address = address_text(advert.source);
    }
  }
  // A master peer may be waiting for our word before it joins the segments (a lost datagram,
  // or it became master after we said it): say it again to every advert of it, while standby.
  if (peer_claims && gate_.role() == plan::Role::Standby) say_standby();
  return !seen.empty();
}

void FailoverUnit::open_signal() {
  if (!group_ || !device_) return;
  const model::Device* peer = model::failover_peer(*site_, *device_);
  try {
    signal_ = std::make_unique<failover::PeerSignal>(group_->virtual_router_id, device_->name,
                                                     peer ? peer->name : std::string());
    signal_descriptor_ = std::make_unique<asio::posix::stream_descriptor>(io_, dup(signal_->fd()));
    wait_for_signal();
  } catch (const std::exception& e) {
    signal_.reset();
    signal_descriptor_.reset();
    hooks_.log(fmt::format("failover: no signal socket yet: {}", e.what()));
  }
}

void FailoverUnit::wait_for_signal() {
  signal_descriptor_->async_wait(asio::posix::stream_descriptor::wait_read,
                                 [this](boost::system::error_code error) {
                                   if (error || !signal_) return;
                                   const auto before = view_.peer_left;
                                   drain_signal();
                                   if (view_.peer_left != before) evaluate("peer's word");
                                   if (signal_descriptor_) wait_for_signal();
                                 });
}

void FailoverUnit::drain_signal() {
  if (!signal_ || signal_->read_standby() == 0) return;
  view_.peer_left = Clock::now();
  peer_said_standby_ = view_.peer_left;
}

void FailoverUnit::say_standby() {
  if (!signal_ || !segments_left_ || peer_fixed_address_ == 0) return;
  signal_->send_standby(peer_fixed_address_);
}

void FailoverUnit::announce(int round) {
  if (!group_ || !device_ || gate_.role() != plan::Role::Active) return;
  for (const auto& [name, self_ip] : device_->self_ips) {
    if (!self_ip.floating) continue;
    const auto prefix = kernel::parse_prefix(self_ip.address.str());
    if (!prefix) continue;
    try {
      kernel::announce_address(device_->ifname_of(self_ip.vlan), *prefix);
    } catch (const std::exception& e) {
      hooks_.log(fmt::format("failover: {}", e.what()));
    }
  }
  if (static_cast<size_t>(round) >= kAnnounceRepeats.size()) return;
  announce_timer_.expires_after(kAnnounceRepeats[round]);
  announce_timer_.async_wait([this, round](boost::system::error_code error) {
    if (!error) announce(round + 1);
  });
}

void FailoverUnit::arm_recheck(std::optional<Clock::time_point> at) {
  if (!at) {
    recheck_timer_.cancel();
    return;
  }
  recheck_timer_.expires_at(*at + milliseconds(1));
  recheck_timer_.async_wait([this](boost::system::error_code error) {
    if (!error) evaluate("timer");
  });
}

}  // namespace etherctl::agent
