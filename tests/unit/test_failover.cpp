// lib/failover's pure parts: keepalived's configuration, VRRP adverts and the role decision.
// keepalived itself checks the rendered file in tests/kernel/failover_test.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

#include "failover/keepalived.hpp"
#include "failover/keepalived_kind.hpp"
#include "failover/role.hpp"
#include "failover/vrrp.hpp"
#include "kernel/ipvs.hpp"
#include "model/site.hpp"

namespace etherctl::failover {
namespace {

using std::chrono::milliseconds;

KeepalivedSettings settings() {
  KeepalivedSettings s;
  s.group = "dc1";
  s.device = "dc1-a";
  s.interface = "eth0";
  s.virtual_router_id = 51;
  s.priority = 200;
  s.agent_ready_file = "/run/etherctl/netns-4026531840.failover/agent-ready";
  return s;
}

TEST(Keepalived, RendersTheElectionOnlyInstance) {
  KeepalivedSettings s = settings();
  s.track_interfaces = {"eth1"};
  s.netns = "lab-dc1-a";
  const std::string conf = render_keepalived_conf(s);
  EXPECT_EQ(conf.substr(conf.find("net_namespace")),
            "net_namespace lab-dc1-a\n"
            "global_defs {\n"
            "  router_id etherctl-dc1-a\n"
            "  vrrp_priority -10\n"
            "  vrrp_no_swap\n"
            "  enable_script_security\n"
            "  script_user root\n"
            "}\n"
            "track_file etherctl_agent {\n"
            "  file \"/run/etherctl/netns-4026531840.failover/agent-ready\"\n"
            "  weight 0\n"
            "  init_file 1\n"
            "}\n"
            "vrrp_instance dc1 {\n"
            "  state BACKUP\n"
            "  interface eth0\n"
            "  virtual_router_id 51\n"
            "  priority 200\n"
            "  advert_int 0.1\n"
            "  version 3\n"
            "  track_file {\n"
            "    etherctl_agent\n"
            "  }\n"
            "  track_interface {\n"
            "    eth1\n"
            "  }\n"
            "  virtual_ipaddress {\n"
            "    169.254.0.51/32 dev lo scope host\n"
            "  }\n"
            "}\n");
  // Every line of the header is a comment.
  for (size_t at = 0; at < conf.find("net_namespace"); at = conf.find('\n', at) + 1) {
    EXPECT_EQ(conf[at], '#') << conf;
  }
}

TEST(Keepalived, AdvertIntervalInCentiseconds) {
  KeepalivedSettings s = settings();
  const std::vector<std::pair<int, std::string>> cases = {
      {1, "0.01"}, {10, "0.1"}, {25, "0.25"}, {100, "1"}, {150, "1.5"}, {4095, "40.95"}};
  for (const auto& [centiseconds, text] : cases) {
    s.advert_centiseconds = centiseconds;
    EXPECT_NE(render_keepalived_conf(s).find("  advert_int " + text + "\n"), std::string::npos)
        << centiseconds;
  }
}

TEST(Keepalived, PreemptionChoices) {
  KeepalivedSettings s = settings();
  std::string conf = render_keepalived_conf(s);
  EXPECT_EQ(conf.find("preempt"), std::string::npos) << "preempting at once is VRRP's default";
  s.preempt_delay_seconds = 30;
  EXPECT_NE(render_keepalived_conf(s).find("  preempt_delay 30\n"), std::string::npos);
  s.preempt = false;
  conf = render_keepalived_conf(s);
  EXPECT_NE(conf.find("  nopreempt\n"), std::string::npos);
  EXPECT_EQ(conf.find("preempt_delay"), std::string::npos);
  EXPECT_NE(conf.find("  state BACKUP\n"), std::string::npos) << "nopreempt needs state BACKUP";
}

// The config etherctl renders for dc1-a of the lab (examples/ha/site.json), after `change`.
std::string lab_unit_conf(const std::function<void(nlohmann::json&)>& change) {
  std::ifstream in(std::filesystem::path(ETHERCTL_SOURCE_DIR) / "examples/ha/site.json");
  nlohmann::json doc = nlohmann::json::parse(in);
  change(doc);
  auto loaded = model::load_site(doc.dump());
  if (!loaded.site) throw std::runtime_error("the changed lab site does not load");
  const model::Site& site = *loaded.site;
  const model::Device& unit = site.devices.at("dc1-a");
  const auto object = desired_keepalived(site, unit, site.failover_groups.at("dc1"),
                                         FailoverFiles{"/run/etherctl/x.failover"});
  return object.attrs.at("config").get<std::string>();
}

TEST(Keepalived, APairWithPoolsPreemptsOnlyOnceItsConnectionsAreSynced) {
  auto with_pools = [](nlohmann::json& doc) {
    for (const char* unit : {"dc1-a", "dc1-b"}) {
      doc["devices"][unit]["pools"]["web"] = {
          {"virtual", {{"address", "198.51.100.80"}, {"port", 8080}}},
          {"members", {{"10.1.0.21:8080", nlohmann::json::object()}}}};
    }
  };
  const std::string delay =
      "  preempt_delay " + std::to_string(kernel::kIpvsSyncSettleSeconds) + "\n";
  EXPECT_EQ(lab_unit_conf([](nlohmann::json&) {}).find("preempt_delay"), std::string::npos);
  EXPECT_NE(lab_unit_conf(with_pools).find(delay), std::string::npos);
  // a longer delay of the file stays; no preemption stays none
  EXPECT_NE(lab_unit_conf([&](nlohmann::json& doc) {
              with_pools(doc);
              doc["failover_groups"]["dc1"]["preempt_delay"] = 30;
            }).find("  preempt_delay 30\n"),
            std::string::npos);
  const std::string none = lab_unit_conf([&](nlohmann::json& doc) {
    with_pools(doc);
    doc["failover_groups"]["dc1"]["preempt"] = false;
  });
  EXPECT_NE(none.find("  nopreempt\n"), std::string::npos);
  EXPECT_EQ(none.find("preempt_delay"), std::string::npos);
}

TEST(Keepalived, UnicastPeers) {
  KeepalivedSettings s = settings();
  s.unicast_source = "198.51.100.11";
  s.unicast_peers = {"198.51.100.12"};
  EXPECT_NE(render_keepalived_conf(s).find("  unicast_src_ip 198.51.100.11\n"
                                           "  unicast_peer {\n"
                                           "    198.51.100.12\n"
                                           "  }\n"),
            std::string::npos);
}

TEST(Keepalived, NoNamespaceLineWithoutANamespace) {
  EXPECT_EQ(render_keepalived_conf(settings()).find("net_namespace"), std::string::npos);
}

TEST(Keepalived, RefusesWhatItCannotWriteSafely) {
  auto refused = [](const KeepalivedSettings& s, const std::string& mention) {
    try {
      render_keepalived_conf(s);
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(mention), std::string::npos) << e.what();
      return true;
    }
    return false;
  };
  for (const std::string bad : {"a b", "a\"b", "a{", "}", "a#b", "a!b", "a\nb", "", "a\\b"}) {
    KeepalivedSettings s = settings();
    s.group = bad;
    EXPECT_TRUE(refused(s, "group name")) << bad;
    s = settings();
    s.agent_ready_file = bad.empty() ? bad : "/run/" + bad + "/ready";
    EXPECT_TRUE(refused(s, "agent ready file path")) << bad;
  }
  KeepalivedSettings s = settings();
  s.track_interfaces = {"eth1", "bad name"};
  EXPECT_TRUE(refused(s, "tracked interface"));
  for (int vrid : {0, 256}) {
    s = settings();
    s.virtual_router_id = vrid;
    EXPECT_TRUE(refused(s, "virtual_router_id"));
  }
  for (int priority : {0, 255}) {
    s = settings();
    s.priority = priority;
    EXPECT_TRUE(refused(s, "priority")) << priority;
  }
  for (int advert : {0, 4096}) {
    s = settings();
    s.advert_centiseconds = advert;
    EXPECT_TRUE(refused(s, "advert interval")) << advert;
  }
}

TEST(Keepalived, Argv) {
  const auto argv = keepalived_argv("/usr/sbin/keepalived", {"/s/k.conf", "/s/k.pid", "/s/v.pid"});
  EXPECT_EQ(argv,
            (std::vector<std::string>{"/usr/sbin/keepalived", "--vrrp", "--dont-fork",
                                      "--log-console", "--no-syslog", "--use-file", "/s/k.conf",
                                      "--pid", "/s/k.pid", "--vrrp_pid", "/s/v.pid"}));
}

// An IPv4 VRRP packet as a SOCK_DGRAM packet socket delivers it.
std::vector<uint8_t> advert_packet(int version, int vrid, int priority, int interval,
                                   int addresses) {
  std::vector<uint8_t> p(20 + 8 + 4 * addresses, 0);
  p[0] = 0x45;
  p[2] = static_cast<uint8_t>(p.size() >> 8);
  p[3] = static_cast<uint8_t>(p.size());
  p[8] = 255;
  p[9] = 112;
  inet_pton(AF_INET, "198.51.100.11", &p[12]);
  inet_pton(AF_INET, "224.0.0.18", &p[16]);
  p[20] = static_cast<uint8_t>(version << 4 | 1);
  p[21] = static_cast<uint8_t>(vrid);
  p[22] = static_cast<uint8_t>(priority);
  p[23] = static_cast<uint8_t>(addresses);
  if (version == 3) {
    p[24] = static_cast<uint8_t>(interval >> 8);
    p[25] = static_cast<uint8_t>(interval);
  } else {
    p[25] = static_cast<uint8_t>(interval);
  }
  return p;
}

TEST(Advert, Version3) {
  const auto p = advert_packet(3, 51, 200, 10, 1);
  auto advert = parse_advert(p.data(), p.size());
  ASSERT_TRUE(advert);
  char text[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &advert->source, text, sizeof text);
  EXPECT_STREQ(text, "198.51.100.11");
  EXPECT_EQ(advert->version, 3);
  EXPECT_EQ(advert->virtual_router_id, 51);
  EXPECT_EQ(advert->priority, 200);
  EXPECT_EQ(advert->interval_centiseconds, 10);
  EXPECT_EQ(advert->address_count, 1);
  const auto big = advert_packet(3, 1, 0, 4095, 0);
  EXPECT_EQ(parse_advert(big.data(), big.size())->interval_centiseconds, 4095);
  EXPECT_EQ(parse_advert(big.data(), big.size())->priority, 0);
}

TEST(Advert, Version2IntervalIsInSeconds) {
  const auto p = advert_packet(2, 7, 100, 1, 2);
  EXPECT_EQ(parse_advert(p.data(), p.size())->interval_centiseconds, 100);
}

TEST(Advert, RefusesWhatIsNotAnAdvert) {
  const auto good = advert_packet(3, 51, 200, 10, 1);
  auto refused = [](std::vector<uint8_t> p) { return !parse_advert(p.data(), p.size()); };
  for (size_t size = 0; size < good.size(); ++size) {
    EXPECT_TRUE(refused(std::vector<uint8_t>(good.begin(), good.begin() + size))) << size;
  }
  auto changed = [&](size_t at, uint8_t value) {
    auto p = good;
    p[at] = value;
    return p;
  };
  EXPECT_TRUE(refused(changed(9, 17)));     // UDP
  EXPECT_TRUE(refused(changed(0, 0x65)));   // IPv6 version nibble
  EXPECT_TRUE(refused(changed(0, 0x44)));   // header shorter than 20 bytes
  EXPECT_TRUE(refused(changed(20, 0x32)));  // VRRP type 2
  EXPECT_TRUE(refused(changed(20, 0x41)));  // VRRP version 4
  EXPECT_TRUE(refused(changed(21, 0)));     // virtual router id 0
  EXPECT_TRUE(refused(changed(6, 0x20)));   // more fragments
  EXPECT_TRUE(refused(changed(7, 0x01)));   // fragment offset
  EXPECT_TRUE(refused(changed(3, 255)));    // total length beyond the data
  EXPECT_FALSE(refused(changed(6, 0x40)));  // DF is fine
}

// --- the role --------------------------------------------------------------------------------

const Clock::time_point t0 = Clock::time_point() + std::chrono::hours(1);

Timing timing() {
  Timing t;
  t.advert = milliseconds(100);
  t.peer_priority = 100;
  return t;
}

ElectionView master_since(Clock::time_point since) {
  ElectionView v;
  v.keepalived_running = true;
  v.master = true;
  v.master_since = since;
  v.own_advert = since;
  return v;
}

TEST(Timing, FollowsRfc5798) {
  Timing t = timing();
  EXPECT_EQ(t.peer_skew(), milliseconds(60));  // (256 - 100) / 256 * 100 ms, truncated
  EXPECT_EQ(t.hang_after(), milliseconds(360));
  EXPECT_EQ(t.quiet_after(), milliseconds(150));
  t.peer_priority = 200;
  EXPECT_EQ(t.peer_skew(), milliseconds(21));
  EXPECT_EQ(t.hang_after(), milliseconds(321));
  // The peer takes over after 3 intervals + its skew: the hang verdict comes then, not before
  // (a keepalived starved for less is no reason to leave a role no one else takes).
  for (int priority : {1, 100, 200, 254}) {
    t.peer_priority = priority;
    EXPECT_EQ(3 * t.advert + t.peer_skew(), t.hang_after()) << priority;
  }
}

TEST(Role, StandbyUnlessKeepalivedRunsAndIsMaster) {
  ElectionView v;
  Verdict verdict = decide(v, timing(), t0);
  EXPECT_EQ(verdict.role, Role::Standby);
  EXPECT_EQ(verdict.reason, "keepalived is not running");
  v.keepalived_down_reason = "killed by signal 9";
  EXPECT_EQ(decide(v, timing(), t0).reason, "keepalived is not running: killed by signal 9");
  v.keepalived_running = true;
  EXPECT_EQ(decide(v, timing(), t0).reason, "keepalived is not master");
  v.not_master_reason = "FAULT: eth0 is down";
  verdict = decide(v, timing(), t0);
  EXPECT_EQ(verdict.role, Role::Standby);
  EXPECT_EQ(verdict.reason, "keepalived is FAULT: eth0 is down");
  EXPECT_FALSE(verdict.recheck_at);
  // A master whose processes are gone is not a master: a crash leaves the marker behind.
  v = master_since(t0);
  v.keepalived_running = false;
  EXPECT_EQ(decide(v, timing(), t0).role, Role::Standby);
}

TEST(Role, ActiveWhileOwnAdvertsFlow) {
  ElectionView v = master_since(t0);
  Verdict verdict = decide(v, timing(), t0 + milliseconds(5));
  EXPECT_EQ(verdict.role, Role::Active);
  EXPECT_EQ(verdict.reason, "keepalived is MASTER");
  ASSERT_TRUE(verdict.recheck_at);
  EXPECT_EQ(*verdict.recheck_at, t0 + milliseconds(360));
  // Adverts keep coming: active throughout.
  for (int i = 1; i < 50; ++i) {
    v.own_advert = t0 + milliseconds(100 * i);
    EXPECT_EQ(decide(v, timing(), t0 + milliseconds(100 * i + 99)).role, Role::Active) << i;
  }
}

TEST(Role, HungKeepalivedIsStandbyWhenThePeerTakesOver) {
  ElectionView v = master_since(t0);
  v.own_advert = t0 + milliseconds(1000);
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(1300)).role, Role::Active);  // starved a bit
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(1360)).role, Role::Active);
  Verdict verdict = decide(v, timing(), t0 + milliseconds(1361));
  EXPECT_EQ(verdict.role, Role::Standby);
  EXPECT_NE(verdict.reason.find("no advertisement for 361 ms"), std::string::npos)
      << verdict.reason;
  EXPECT_FALSE(verdict.recheck_at);
  // An advert again: active again.
  v.own_advert = t0 + milliseconds(1400);
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(1401)).role, Role::Active);
}

TEST(Role, NoAdvertSeenSinceTheTransitionCountsFromTheTransition) {
  ElectionView v = master_since(t0);
  v.own_advert = t0 - milliseconds(5000);  // before this MASTER period
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(300)).role, Role::Active);
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(400)).role, Role::Standby);
  v.own_advert.reset();
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(300)).role, Role::Active);
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(400)).role, Role::Standby);
}

TEST(Role, WaitsUntilThePeerStopsAdvertising) {
  // Preemption: we became master at t0; the old master's last advert was just before.
  ElectionView v = master_since(t0);
  v.peer_advert = t0 - milliseconds(30);
  v.peer_advert_priority = 100;
  v.peer_address = "198.51.100.12";
  Verdict verdict = decide(v, timing(), t0 + milliseconds(1));
  EXPECT_EQ(verdict.role, Role::Standby);
  EXPECT_NE(verdict.reason.find("the peer 198.51.100.12 (priority 100) advertised 31 ms ago"),
            std::string::npos)
      << verdict.reason;
  ASSERT_TRUE(verdict.recheck_at);
  EXPECT_EQ(*verdict.recheck_at, t0 + milliseconds(120));  // its last advert + 150 ms
  EXPECT_FALSE(verdict.both_master);
  v.own_advert = t0 + milliseconds(100);
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(119)).role, Role::Standby);
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(120)).role, Role::Active);
}

TEST(Timing, ThePeersWordIsAwaitedOneIntervalBeyondItsHangThreshold) {
  Timing t = timing();
  for (int priority : {1, 100, 200, 254}) {
    t.priority = priority;
    Timing peer = t;  // the peer's view: this unit is its peer
    peer.peer_priority = priority;
    EXPECT_EQ(t.peer_word_timeout(), peer.hang_after() + t.advert) << priority;
  }
}

TEST(Role, JoinsOnlyOnceThePeerSaidItLeftTheSegments) {
  // Preemption (or a hung keepalived that resumes): we became master at t0; the peer's last
  // advert (priority 100, it was master) came at t0 - 30 ms.
  Timing t = timing();
  t.priority = 200;  // peer_word_timeout = 400 + 21 ms
  ElectionView v = master_since(t0);
  v.peer_advert = v.peer_master_advert = t0 - milliseconds(30);
  v.peer_advert_priority = 100;
  v.own_advert = t0 + milliseconds(100);
  // Its keepalived is quiet for 150 ms, but its agent has not said it left: wait.
  Verdict verdict = decide(v, t, t0 + milliseconds(150));
  EXPECT_EQ(verdict.role, Role::Standby);
  EXPECT_NE(verdict.reason.find("has not yet said it left the segments"), std::string::npos)
      << verdict.reason;
  ASSERT_TRUE(verdict.recheck_at);
  EXPECT_EQ(*verdict.recheck_at, t0 + milliseconds(391));  // its last advert + 421 ms
  // A word from before its last advert does not count.
  v.peer_left = t0 - milliseconds(31);
  EXPECT_EQ(decide(v, t, t0 + milliseconds(150)).role, Role::Standby);
  // Its word after its last advert: join (once its keepalived is quiet for 150 ms).
  v.peer_left = t0 + milliseconds(40);
  EXPECT_EQ(decide(v, t, t0 + milliseconds(119)).role, Role::Standby);
  EXPECT_EQ(decide(v, t, t0 + milliseconds(120)).role, Role::Active);
  // No word at all (its links are down, or it died): join once the timeout ran out.
  v.peer_left.reset();
  v.own_advert = t0 + milliseconds(390);
  EXPECT_EQ(decide(v, t, t0 + milliseconds(390)).role, Role::Standby);
  EXPECT_EQ(decide(v, t, t0 + milliseconds(391)).role, Role::Active);
}

TEST(Role, APeerThatResignsIsWaitedForToo) {
  // The peer was master until t0 - 20 ms, then resigned with a priority-0 advert (its
  // keepalived went to FAULT): its agent may still be taking the unit out of the segments.
  ElectionView v = master_since(t0);
  v.peer_master_advert = t0 - milliseconds(20);
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(1)).role, Role::Standby);
  v.peer_left = t0 + milliseconds(1);
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(2)).role, Role::Active);
  // Its agent said it before its keepalived resigned (an agent that stops leaves the
  // segments, then the election): that counts, it is after its last master advert.
  v.peer_left = t0 - milliseconds(10);
  EXPECT_EQ(decide(v, timing(), t0 + milliseconds(2)).role, Role::Active);
}

TEST(Role, PeerStillAdvertisingAfterAHandoverIsBothMaster) {
  ElectionView v = master_since(t0);
  v.peer_advert_priority = 100;
  for (int i = 0; i < 10; ++i) {
    v.own_advert = t0 + milliseconds(100 * i);
    v.peer_advert = t0 + milliseconds(100 * i + 50);
    Verdict verdict = decide(v, timing(), t0 + milliseconds(100 * i + 60));
    EXPECT_EQ(verdict.role, Role::Standby) << i;
    EXPECT_EQ(verdict.both_master, 100 * i + 60 > 250) << i;
  }
}

TEST(Role, APeerThatPreemptsIsAHandoverNotBothMaster) {
  // Master since t0; at t0 + 5 s the peer (higher priority) returns and advertises: keepalived
  // here leaves MASTER within an advert. Both claim the role only since the peer's first
  // advert: both_master (a split brain) only if that lasts longer than a handover takes.
  ElectionView v = master_since(t0);
  v.peer_advert_priority = 200;
  v.peer_advert = v.peer_claim_since = t0 + milliseconds(5000);
  v.own_advert = t0 + milliseconds(4990);
  Verdict verdict = decide(v, timing(), t0 + milliseconds(5001));
  EXPECT_EQ(verdict.role, Role::Standby);
  EXPECT_FALSE(verdict.both_master);
  for (int i = 1; i < 5; ++i) {  // both keep advertising
    v.own_advert = t0 + milliseconds(4990 + 100 * i);
    v.peer_advert = t0 + milliseconds(5000 + 100 * i);
    verdict = decide(v, timing(), t0 + milliseconds(5001 + 100 * i));
    EXPECT_EQ(verdict.both_master, 1 + 100 * i > 250) << i;
  }
  // A peer of lower priority never preempts a master that advertises: its claim means this
  // unit's keepalived is hung or cannot be heard, a split brain at once.
  v.peer_advert_priority = 50;
  v.peer_advert = v.peer_claim_since = t0 + milliseconds(5000);
  EXPECT_TRUE(decide(v, timing(), t0 + milliseconds(5001)).both_master);
}

TEST(Role, HungAndPeerClaimingIsHung) {
  ElectionView v = master_since(t0);
  v.peer_advert = t0 + milliseconds(900);
  v.peer_advert_priority = 100;
  Verdict verdict = decide(v, timing(), t0 + milliseconds(950));
  EXPECT_EQ(verdict.role, Role::Standby);
  EXPECT_NE(verdict.reason.find("hung"), std::string::npos);
  EXPECT_TRUE(verdict.both_master);
}

}  // namespace
}  // namespace etherctl::failover
