// The failover side of `etherctl watch` for a unit of a failover group (docs/failover.md): it
// watches the election (keepalived's marker address, keepalived's processes, the
// advertisements on the wire, the peer's word), decides the unit's role
// (lib/failover/role.hpp) and has the agent apply it, through the ordinary pipeline with the
// role as its input.
//
// It runs on a thread of its own, the election thread, so that it never waits behind a
// reconcile of the agent's thread (one took 629 ms on the loaded test host). The role is
// shared through the RoleGate: leaving the active role takes the gated ports out of their
// bridges at once on this thread, under the gate's lock, and every join of a gated port by a
// reconcile takes the same lock and checks that the unit is still active. Once the block is
// done, no reconcile, whenever it started, can join a gated port again.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/events.hpp"
#include "failover/advert_tap.hpp"
#include "failover/files.hpp"
#include "failover/peer_signal.hpp"
#include "failover/role.hpp"
#include "model/site.hpp"
#include "plan/plan.hpp"

namespace etherctl::agent {

// The unit's role, shared by the election thread (which decides it) and the agent's reconciles
// (which apply it). One lock: a change of role and a join of a gated port never interleave.
class RoleGate {
 public:
  std::optional<plan::Role> role() const;
  // Sets the role; `while_locked` (may be empty) runs before the lock is released: the fast
  // block of a unit that leaves the active role.
  void set(std::optional<plan::Role> role, const std::function<void()>& while_locked = {});
  // Runs `join` (the netlink request that puts a gated port into its bridge) under the lock,
  // only while the role is active; false when it did not run it.
  bool join_if_active(const std::function<void()>& join) const;
  // From now on every change of role is also written to `path` (failover::PublishedRole),
  // under that file's lock too, for the processes that are not the agent (the revert of an
  // unconfirmed apply); the current role at once. Throws std::runtime_error naming the file.
  void publish(const std::string& path);

 private:
  mutable std::mutex mutex_;
  std::optional<plan::Role> role_;
  std::unique_ptr<failover::PublishedRole> published_;
};

// The fast block of a unit that leaves the active role: takes the gated ports of `device` (the
// ports its active role has and its standby role lacks) out of their bridges, one netlink
// request each, in the calling thread's network namespace. A port whose interface is missing
// is skipped. Returns how many were taken out. Throws on a netlink failure.
int remove_gated_ports(const model::Site& site, const model::Device& device);

class FailoverUnit {
 public:
  struct Hooks {
    // Asks the agent for a reconcile with the role as it is then (returns at once: the
    // reconcile runs on the agent's thread, later).
    std::function<void()> reconcile;
    std::function<void(const std::string&)> log;
  };
  explicit FailoverUnit(Hooks hooks);
  ~FailoverUnit();
  FailoverUnit(const FailoverUnit&) = delete;
  FailoverUnit& operator=(const FailoverUnit&) = delete;

  // Starts the election thread. The agent calls it once it is in its network namespace and
  // has dropped its capabilities (both are per thread, and a new thread inherits them); until
  // then the calls below run on the caller's thread.
  void start();

  // Takes up the duties of `device` (a unit of a group) with its files in `dir`, at start or
  // after a reload: the agent lock, the current state of the election, the role it implies
  // (not applied yet: the agent's next reconcile does). Throws std::runtime_error when another
  // agent holds this namespace's failover lock.
  void configure(std::shared_ptr<const model::Site> site, const std::string& device,
                 const std::string& dir);
  bool configured();

  // The role to apply (what the agent's reconciles pass to the engine), and the gate their
  // joins of gated ports go through (engine::Options::join_gate).
  std::optional<plan::Role> role() const { return gate_.role(); }
  std::function<bool(const std::function<void()>&)> join_gate() const;
  // After every reconcile of the agent (`applied`: the role it applied): find keepalived's
  // processes (a reconcile may have started them), open the advertisement tap once its
  // interface exists, say "ready" to keepalived after the first success, finish a transition.
  void after_reconcile(bool succeeded, std::optional<plan::Role> applied);
  // The agent stops: leave the segments, have `reconcile_as_standby` (the agent's) release the
  // floating addresses, then leave the election (keepalived resigns), so that the peer takes
  // over without overlap.
  void stop(const std::function<void()>& reconcile_as_standby);

  // What status and the role record show (null when the device is in no group); metrics.
  nlohmann::json status();
  std::string metrics();

 private:
  // Runs `f` on the election thread and waits for its result (or exception).
  template <typename F>
  auto on_thread(F f) -> decltype(f());
  void configure_here(std::shared_ptr<const model::Site> site, const std::string& device,
                      const std::string& dir);
  void release();
  void after_reconcile_here(bool succeeded, std::optional<plan::Role> applied);
  nlohmann::json status_here() const;
  std::string metrics_here() const;
  void open_address_events();
  void wait_for_address_events();
  // Host-scope IPv4 addresses added or removed (keepalived's marker among them).
  void on_host_addresses(const std::vector<std::pair<model::IpAddress, bool>>& changes);
  // keepalived's marker as the kernel has it now, when an address event may have been lost
  // (the event socket overran); evaluates when it differs from what the events said.
  void resync_marker();
  void evaluate(const char* trigger);
  void transition(const failover::Verdict& verdict);
  // The first step of leaving the active role, at once, under the gate's lock: the gated
  // bridge ports leave their bridges (one netlink request each) before the agent's reconcile
  // observes and plans the rest.
  void leave_segments();
  void track_split_brain(const failover::Verdict& verdict);
  void write_record();
  void watch_keepalived();
  void wait_for_keepalived_exit();
  void open_tap();
  void wait_for_adverts();
  void open_signal();
  void wait_for_signal();
  void drain_signal();
  void say_standby();  // tells the peer this unit is out of the segments
  bool drain_tap();    // reads what the tap holds into the view; true when it held adverts
  void announce(int round);
  void arm_recheck(std::optional<failover::Clock::time_point> at);

  boost::asio::io_context io_;  // the election thread's
  std::thread thread_;
  Hooks hooks_;
  RoleGate gate_;
  std::shared_ptr<const model::Site> site_;
  const model::Device* device_ = nullptr;
  const model::FailoverGroup* group_ = nullptr;
  failover::FailoverFiles files_;
  int lock_fd_ = -1;
  failover::Timing timing_;
  failover::ElectionView view_;
  std::string cause_;
  double since_ = 0;  // unix seconds
  uint64_t transitions_ = 0;
  nlohmann::json last_transition_;
  bool ready_ = false;
  // Split brain: both units act as master, or keepalived failed while this unit was active.
  bool split_brain_ = false;
  std::string split_brain_reason_;
  double split_brain_since_ = 0;
  uint64_t split_brains_ = 0;
  uint32_t peer_source_ = 0;
  std::optional<failover::Clock::time_point> peer_last_seen_;
  int peer_last_priority_ = 0;
  std::string recorded_election_;  // the election as the last record showed it
  bool stopping_ = false;          // the agent stops: no more transitions
  // The transition whose reconcile has not finished yet: its role and when it began.
  std::optional<std::pair<plan::Role, failover::Clock::time_point>> applying_;
  std::unique_ptr<EventSocket> address_events_;  // keepalived's marker, for this thread
  std::unique_ptr<boost::asio::posix::stream_descriptor> address_descriptor_;
  pid_t keepalived_pid_ = 0;
  std::unique_ptr<boost::asio::posix::stream_descriptor> pidfd_;
  std::unique_ptr<failover::AdvertTap> tap_;
  std::string tap_interface_;
  uint64_t tap_generation_ = 0;  // one more for every tap opened
  std::unique_ptr<boost::asio::posix::stream_descriptor> tap_descriptor_;
  std::unique_ptr<failover::PeerSignal> signal_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> signal_descriptor_;
  uint32_t peer_fixed_address_ = 0;  // where the word goes (IPv4, network order)
  bool segments_left_ = false;       // the gated ports are out: "standby" may be said
  std::optional<failover::Clock::time_point> peer_said_standby_;  // for status
  boost::asio::steady_timer recheck_timer_;
  boost::asio::steady_timer announce_timer_;
  boost::asio::steady_timer tap_retry_timer_;
  failover::Clock::time_point tap_opened_at_{};
};

template <typename F>
auto FailoverUnit::on_thread(F f) -> decltype(f()) {
  if (!thread_.joinable() || std::this_thread::get_id() == thread_.get_id()) return f();
  std::packaged_task<decltype(f())()> task(std::move(f));
  auto result = task.get_future();
  boost::asio::post(io_, [&task] { task(); });
  return result.get();
}

}  // namespace etherctl::agent
