// The failover side of `etherctl watch` for a unit of a failover group (docs/failover.md): it
// watches the election (keepalived's marker address, keepalived's processes, the
// advertisements on the wire), decides the unit's role (lib/failover/role.hpp) and has the
// agent apply it at once, through the ordinary pipeline with the role as its input.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "failover/advert_tap.hpp"
#include "failover/files.hpp"
#include "failover/peer_signal.hpp"
#include "failover/role.hpp"
#include "model/site.hpp"
#include "plan/plan.hpp"

namespace etherctl::agent {

class FailoverUnit {
 public:
  struct Hooks {
    // Applies the site with this role now (waiting for the lock); returns true when it
    // succeeded.
    std::function<bool(plan::Role)> apply;
    std::function<void(const std::string&)> log;
  };
  FailoverUnit(boost::asio::io_context& io, Hooks hooks);
  ~FailoverUnit();
  FailoverUnit(const FailoverUnit&) = delete;
  FailoverUnit& operator=(const FailoverUnit&) = delete;

  // Takes up the duties of `device` (a unit of a group) with its files in `dir`, at start or
  // after a reload: the agent lock, the current state of the election, the role it implies
  // (not applied yet: the agent's next reconcile does). Throws std::runtime_error when another
  // agent holds this namespace's failover lock.
  void configure(std::shared_ptr<const model::Site> site, const std::string& device,
                 const std::string& dir);
  // Lays the duties down (the device left its group): the caller reconciles afterwards.
  void release();
  bool configured() const { return group_ != nullptr; }

  // The role to apply (what the agent's reconciles pass to the engine).
  std::optional<plan::Role> role() const;
  // After every reconcile: find keepalived's processes (a reconcile may have started them),
  // open the advertisement tap once its interface exists, and say "ready" to keepalived after
  // the first success.
  void after_reconcile(bool succeeded);
  // Host-scope IPv4 addresses added or removed (keepalived's marker among them).
  void on_host_addresses(const std::vector<std::pair<model::IpAddress, bool>>& changes);
  // keepalived's marker as the kernel has it now, when an address event may have been lost
  // (the event socket overran); evaluates when it differs from what the events said.
  void resync_marker();
  // The agent stops: leave the segments and release the floating addresses, then leave the
  // election (keepalived resigns), so that the peer takes over without overlap.
  void stop();

  // What status and the role record show; metrics.
  nlohmann::json status() const;
  std::string metrics() const;

 private:
  void evaluate(const char* trigger);
  void transition(const failover::Verdict& verdict);
  // The first step of leaving the active role, at once: the gated bridge ports leave their
  // bridges (one netlink request each) before the reconcile observes and plans the rest.
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

  boost::asio::io_context& io_;
  Hooks hooks_;
  std::shared_ptr<const model::Site> site_;
  const model::Device* device_ = nullptr;
  const model::FailoverGroup* group_ = nullptr;
  failover::FailoverFiles files_;
  int lock_fd_ = -1;
  failover::Timing timing_;
  failover::ElectionView view_;
  std::optional<plan::Role> role_;
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
  bool applying_ = false;          // a reconcile of ours runs: evaluations wait for it
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
};

}  // namespace etherctl::agent
