#include "failover/role.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace etherctl::failover {

using std::chrono::milliseconds;

std::string to_string(Role role) { return role == Role::Active ? "active" : "standby"; }

milliseconds Timing::peer_skew() const {
  return milliseconds(advert.count() * (256 - std::clamp(peer_priority, 0, 255)) / 256);
}

milliseconds Timing::hang_after() const { return 3 * advert + peer_skew(); }

milliseconds Timing::quiet_after() const { return advert + advert / 2; }

milliseconds Timing::peer_word_timeout() const {
  return 4 * advert + milliseconds(advert.count() * (256 - std::clamp(priority, 0, 255)) / 256);
}

namespace {

long long ms(Clock::duration d) { return std::chrono::duration_cast<milliseconds>(d).count(); }

}  // namespace

Verdict decide(const ElectionView& view, const Timing& timing, Clock::time_point now) {
  Verdict verdict;
  if (!view.keepalived_running) {
    verdict.reason =
        "keepalived is not running" +
        (view.keepalived_down_reason.empty() ? std::string() : ": " + view.keepalived_down_reason);
    return verdict;
  }
  if (!view.master) {
    verdict.reason = view.not_master_reason.empty() ? "keepalived is not master"
                                                    : "keepalived is " + view.not_master_reason;
    return verdict;
  }
  auto earliest = [&](Clock::time_point t) {
    verdict.recheck_at = verdict.recheck_at ? std::min(*verdict.recheck_at, t) : t;
  };

  // Our own adverts: counted from the transition when none has been seen since.
  Clock::time_point last_own = view.master_since;
  if (view.own_advert && *view.own_advert > last_own) last_own = *view.own_advert;
  const bool hung = now - last_own > timing.hang_after();
  if (!hung) earliest(last_own + timing.hang_after());

  const bool peer_claims = view.peer_advert && now - *view.peer_advert < timing.quiet_after();
  if (peer_claims) {
    earliest(*view.peer_advert + timing.quiet_after());
    // A handover takes one advert of the new master plus the old one's last: longer than
    // that, with the peer still advertising, both act as master. A peer of higher priority
    // that starts to advertise while this unit is master preempts (keepalived here steps
    // down at its first advert): counted from its first advert. A lower one never takes the
    // role from a master that advertises: from this unit's transition (it is hung, or
    // cannot be heard).
    Clock::time_point both_since = view.master_since;
    if (view.peer_advert_priority > timing.priority && view.peer_claim_since &&
        *view.peer_claim_since > both_since) {
      both_since = *view.peer_claim_since;
    }
    verdict.both_master = now - both_since > timing.quiet_after() + timing.advert;
  }

  if (hung) {
    verdict.reason = fmt::format(
        "keepalived is MASTER but has sent no advertisement for {} ms (hung?); the peer takes "
        "over",
        ms(now - last_own));
    verdict.recheck_at.reset();  // only a new advert (an event) changes this
    return verdict;
  }
  if (peer_claims) {
    verdict.reason = fmt::format(
        "keepalived is MASTER, but the peer {} (priority {}) advertised {} ms ago; waiting "
        "until it stops",
        view.peer_address.empty() ? std::string("?") : view.peer_address, view.peer_advert_priority,
        ms(now - *view.peer_advert));
    return verdict;
  }
  const bool peer_recent =
      view.peer_master_advert && now - *view.peer_master_advert < timing.peer_word_timeout();
  if (peer_recent && !(view.peer_left && *view.peer_left >= *view.peer_master_advert)) {
    earliest(*view.peer_master_advert + timing.peer_word_timeout());
    verdict.reason = fmt::format(
        "keepalived is MASTER; the peer advertised as master {} ms ago and has not yet said it "
        "left the segments: waiting for that (at most {} ms after its advert)",
        ms(now - *view.peer_master_advert), timing.peer_word_timeout().count());
    return verdict;
  }
  verdict.role = Role::Active;
  verdict.reason = "keepalived is MASTER";
  return verdict;
}

}  // namespace etherctl::failover
