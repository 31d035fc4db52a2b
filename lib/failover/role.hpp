// The role of a failover unit, decided from what its agent observes. Pure code: the agent
// feeds it keepalived's state (its marker address, keepalived.hpp), keepalived's liveness (its
// processes) and the VRRP advertisements it sees on the wire, and applies the verdict.
//
// A unit is active only while all of these hold, so that it fails closed:
//   * keepalived runs and is MASTER (holds its marker address);
//   * its own advertisements keep leaving: none for `hang_after`, the time after which the
//     peer takes over (3 x advert + its skew, RFC 5798 6.4.2), means keepalived is hung
//     (stopped, starved) and this unit must leave; the peer waits for its word (below);
//   * the peer does not advertise as master: a peer advert with a priority above 0 within
//     `quiet_after` means the peer still forwards (a handover in progress, or both claim the
//     role), and two forwarding units would loop the stretched segment. A priority-0 advert
//     means the peer's keepalived resigned;
//   * the peer has left the segments: after a master advert of the peer (priority above 0,
//     also when a priority-0 resignation followed) within `peer_word_timeout`, its agent
//     must have said so since (peer_signal.hpp). keepalived leaves MASTER at once, its agent
//     takes the unit out of the bridges a moment later; this unit joins only after that
//     ("block first, then release; take, then unblock" across the pair). A peer silent for
//     longer has, if its agent runs, left by itself (its own adverts stopped: hung, or its
//     keepalived is no longer master), and a dead one forwards nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace etherctl::failover {

using Clock = std::chrono::steady_clock;

enum class Role { Standby, Active };
std::string to_string(Role role);  // "standby", "active"

struct Timing {
  std::chrono::milliseconds advert{100};
  int priority = 100;  // this unit's
  int peer_priority = 100;

  // VRRPv3 skew time of the peer: (256 - priority) / 256 advertisement intervals.
  std::chrono::milliseconds peer_skew() const;
  // No own advertisement for this long while MASTER: keepalived is hung. The peer's master
  // down interval (3 intervals + the peer's skew), when the peer takes over anyway: a shorter
  // threshold made a unit whose keepalived was starved for 260-360 ms on a loaded host leave
  // the role while no one took it (an outage). The peer waits for this unit's word.
  std::chrono::milliseconds hang_after() const;
  // A peer advertisement this recent means the peer still acts as master: one and a half
  // intervals (the peer sends one every interval while it is master).
  std::chrono::milliseconds quiet_after() const;
  // How long after the peer's last master advert this unit waits for the peer's word before
  // it joins the segments without it: the peer's hang_after (3 intervals + this unit's skew)
  // plus one interval for the peer's agent to leave. Only a peer that cannot talk (its links
  // down, or dead) makes a takeover wait this long: 1 interval more than the master down
  // interval (460 ms with the defaults).
  std::chrono::milliseconds peer_word_timeout() const;
};

// What the agent knows about the election at one moment.
struct ElectionView {
  bool keepalived_running = false;
  std::string keepalived_down_reason;            // why it is not running, for the verdict's reason
  bool master = false;                           // keepalived holds its marker address
  Clock::time_point master_since{};              // since when
  std::string not_master_reason;                 // else why ("BACKUP", "FAULT: eth0 is down")
  std::optional<Clock::time_point> own_advert;   // last advertisement this unit sent
  std::optional<Clock::time_point> peer_advert;  // last peer advert with a priority above 0
  // The first advert of the peer's current claim (its adverts with a priority above 0, none
  // further apart than quiet_after): a peer of higher priority (preempting) and this unit
  // both claim the role only since the later of this and master_since.
  std::optional<Clock::time_point> peer_claim_since;
  int peer_advert_priority = 0;
  std::string peer_address;  // of that advert, for messages
  // The last peer advert with a priority above 0, kept when the peer resigns (priority 0).
  std::optional<Clock::time_point> peer_master_advert;
  std::optional<Clock::time_point> peer_left;  // the peer's agent last said "standby"
};

struct Verdict {
  Role role = Role::Standby;
  std::string reason;  // one line: why this role
  // Both units claim to be master (MASTER here, the peer advertising) for longer than a
  // handover takes: keepalived cannot hear the other side, or one of them misbehaves. A peer
  // of higher priority that starts to advertise while this unit has long been master (it
  // returns and preempts) is a handover, not a split brain, until it lasts that long.
  bool both_master = false;
  // The verdict changes by itself at this time unless an event comes first (a timeout runs
  // out: the peer stayed quiet long enough, or our own adverts stopped for too long).
  std::optional<Clock::time_point> recheck_at;
};

Verdict decide(const ElectionView& view, const Timing& timing, Clock::time_point now);

}  // namespace etherctl::failover
