// Failover groups in the model: parsing, and every rule with its JSON pointer (each case
// fails if its check is missing: the lab's site file is valid, and one change breaks one
// rule). No kernel.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "model/failover.hpp"
#include "model/site.hpp"
#include "plan/plan.hpp"

namespace etherctl {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

json lab_site() {
  std::ifstream in(fs::path(ETHERCTL_SOURCE_DIR) / "examples/ha/site.json");
  return json::parse(in);
}

model::LoadResult load(const json& site) { return model::load_site(site.dump()); }

std::string dump(const model::Problems& problems) {
  std::string out;
  for (const auto& p : problems) out += "  " + p.path + ": " + p.message + "\n";
  return out;
}

// The site with `change` applied must be refused with a problem at `path` whose message
// contains `message`.
void expect_problem(const std::function<void(json&)>& change, const std::string& path,
                    const std::string& message) {
  json site = lab_site();
  change(site);
  auto result = load(site);
  EXPECT_FALSE(result.site) << path;
  bool found = false;
  for (const auto& p : result.problems) {
    if (p.path == path && p.message.find(message) != std::string::npos) found = true;
  }
  EXPECT_TRUE(found) << "expected at " << path << ": " << message << "\ngot:\n"
                     << dump(result.problems);
}

TEST(FailoverModel, TheLabSiteLoads) {
  auto result = load(lab_site());
  ASSERT_TRUE(result.site) << dump(result.problems);
  const auto& site = *result.site;
  const auto& group = site.failover_groups.at("dc1");
  EXPECT_EQ(group.devices, (std::vector<std::string>{"dc1-a", "dc1-b"}));
  EXPECT_EQ(group.vlan, "wan");
  EXPECT_EQ(group.virtual_router_id, 51);
  EXPECT_EQ(group.advert_centiseconds, 10);  // the default
  EXPECT_TRUE(group.preempt);
  const auto& a = site.devices.at("dc1-a");
  ASSERT_TRUE(a.failover);
  EXPECT_EQ(a.failover->group, "dc1");
  EXPECT_EQ(a.failover->priority, 200);
  EXPECT_TRUE(a.self_ips.at("wan-floating").floating);
  EXPECT_FALSE(a.self_ips.at("wan-self").floating);
  EXPECT_EQ(model::failover_group_of(site, a), &group);
  EXPECT_EQ(model::failover_peer(site, a), &site.devices.at("dc1-b"));
  EXPECT_EQ(model::endpoint_name(site, a), "dc1");
  EXPECT_EQ(site.tunnels.at("dcx").endpoints.at("dc1").address.str(), "198.51.100.1");
  // Without "failover" a device is its own endpoint and has no peer.
  json single = lab_site();
  single["failover_groups"].erase("dc2");
  single["devices"]["dc2"] = single["devices"]["dc2-a"];
  single["devices"]["dc2"].erase("failover");
  single["devices"]["dc2"]["self_ips"]["wan-floating"].erase("floating");
  single["devices"]["dc2"]["self_ips"]["server-gateway"].erase("floating");
  single["devices"].erase("dc2-a");
  single["devices"].erase("dc2-b");
  auto loaded = load(single);
  ASSERT_TRUE(loaded.site) << dump(loaded.problems);
  const auto& dc2 = loaded.site->devices.at("dc2");
  EXPECT_EQ(model::failover_group_of(*loaded.site, dc2), nullptr);
  EXPECT_EQ(model::failover_peer(*loaded.site, dc2), nullptr);
  EXPECT_EQ(model::endpoint_name(*loaded.site, dc2), "dc2");
}

TEST(FailoverModel, AdvertIntervalInSecondsWithCentisecondSteps) {
  for (const auto& [text, centiseconds] : std::vector<std::pair<json, int>>{
           {0.01, 1}, {0.1, 10}, {1, 100}, {2.5, 250}, {40.95, 4095}}) {
    json site = lab_site();
    site["failover_groups"]["dc1"]["advert_int"] = text;
    auto result = load(site);
    ASSERT_TRUE(result.site) << text << dump(result.problems);
    EXPECT_EQ(result.site->failover_groups.at("dc1").advert_centiseconds, centiseconds) << text;
  }
  for (const json& bad : {json(0), json(0.005), json(41), json(0.125), json("0.1"), json(-1)}) {
    json site = lab_site();
    site["failover_groups"]["dc1"]["advert_int"] = bad;
    auto result = load(site);
    EXPECT_FALSE(result.site) << bad;
    ASSERT_FALSE(result.problems.empty());
    EXPECT_EQ(result.problems[0].path, "/failover_groups/dc1/advert_int") << dump(result.problems);
  }
}

TEST(FailoverModel, RulesWithPointers) {
  expect_problem([](json& s) { s["failover_groups"]["dc1"]["devices"] = {"dc1-a"}; },
                 "/failover_groups/dc1/devices", "exactly two devices");
  expect_problem([](json& s) { s["failover_groups"]["dc1"]["devices"][1] = "dc1-bb"; },
                 "/failover_groups/dc1/devices/1", "unknown device \"dc1-bb\"; did you mean");
  expect_problem([](json& s) { s["failover_groups"]["dc1"]["devices"][1] = "dc1-a"; },
                 "/failover_groups/dc1/devices/1", "listed twice");
  expect_problem([](json& s) { s["failover_groups"]["dc2"]["devices"][0] = "dc1-a"; },
                 "/failover_groups/dc2/devices/0", "already a unit of failover group \"dc1\"");
  expect_problem([](json& s) { s["devices"]["dc1-b"].erase("failover"); }, "/devices/dc1-b",
                 "it needs \"failover\"");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["failover"]["group"] = "dc3"; },
                 "/devices/dc1-b/failover/group", "unknown failover group \"dc3\"");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["failover"]["priority"] = 200; },
                 "/devices/dc1-b/failover/priority", "need different priorities");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["failover"]["priority"] = 255; },
                 "/devices/dc1-b/failover/priority", "out of range 1..254");
  expect_problem([](json& s) { s["failover_groups"]["dc2"]["virtual_router_id"] = 51; },
                 "/failover_groups/dc2/virtual_router_id",
                 "also the virtual router id of failover group \"dc1\"");
  expect_problem([](json& s) { s["failover_groups"]["dc1"]["vlan"] = "wan2"; },
                 "/failover_groups/dc1/vlan", "has no VLAN or VLAN group \"wan2\"");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["self_ips"].erase("wan-self"); },
                 "/failover_groups/dc1/vlan", "no fixed (not floating) IPv4 self IP");
  expect_problem(
      [](json& s) {
        s["failover_groups"]["dc1"]["preempt"] = false;
        s["failover_groups"]["dc1"]["preempt_delay"] = 5;
      },
      "/failover_groups/dc1/preempt_delay", "no effect");
  expect_problem([](json& s) { s["failover_groups"]["dc1-a"] = s["failover_groups"]["dc1"]; },
                 "/failover_groups/dc1-a", "is also a device");
  expect_problem([](json& s) { s["failover_groups"]["dc1"]["devices"].push_back("dc2-a"); },
                 "/failover_groups/dc1/devices",
                 "exactly two devices (an active and a standby unit), not 3");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["failover"]["priority"] = 0; },
                 "/devices/dc1-b/failover/priority", "out of range 1..254");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["failover"].erase("priority"); },
                 "/devices/dc1-b/failover", "priority");
  // A unit that names the other group: each side of the mismatch is reported.
  expect_problem([](json& s) { s["devices"]["dc2-b"]["failover"]["group"] = "dc1"; },
                 "/devices/dc2-b/failover/group",
                 "is \"dc1\", but failover group \"dc2\" lists this device");
  expect_problem([](json& s) { s["devices"]["dc2-b"]["failover"]["group"] = "dc1"; },
                 "/devices/dc2-b/failover/group",
                 "failover group \"dc1\" does not list device \"dc2-b\"");
  expect_problem([](json& s) { s["failover_groups"]["dc1"]["virtual_router_id"] = 256; },
                 "/failover_groups/dc1/virtual_router_id", "out of range 1..255");
  expect_problem([](json& s) { s["failover_groups"]["dc1"]["devices"] = "dc1-a"; },
                 "/failover_groups/dc1/devices", "array");
  expect_problem([](json& s) { s["failover_groups"]["dc1"]["vlan"] = ""; },
                 "/failover_groups/dc1/vlan", "must name a VLAN or VLAN group, not be empty");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["failover"]["group"] = ""; },
                 "/devices/dc1-b/failover/group", "must name a failover group, not be empty");
  expect_problem([](json& s) { s["failover_groups"]["dc1"]["priority"] = 1; },
                 "/failover_groups/dc1/priority", "");
}

TEST(FailoverModel, UnitsShareTheirConfiguration) {
  expect_problem([](json& s) { s["devices"]["dc1-b"]["vlans"].erase("servers"); }, "/devices/dc1-b",
                 "lacks VLAN \"servers\" of device \"dc1-a\"");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["vlans"]["servers"]["mtu"] = 9000; },
                 "/devices/dc1-b/vlans/servers", "differs from VLAN \"servers\"");
  expect_problem(
      [](json& s) {
        s["devices"]["dc1-b"]["vlans"]["extra"] = {{"interface", "eth2"}};
      },
      "/devices/dc1-b/vlans/extra", "is not declared by device \"dc1-a\"");
  expect_problem(
      [](json& s) {
        s["devices"]["dc1-b"]["self_ips"]["wan-floating"]["address"] = "198.51.100.2/24";
      },
      "/devices/dc1-b/self_ips/wan-floating", "differs from floating self IP");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["vlan_groups"]["vmotion"]["mtu"] = 1400; },
                 "/devices/dc1-b/vlan_groups/vmotion", "differs from VLAN group \"vmotion\"");
  expect_problem(
      [](json& s) { s["devices"]["dc1-b"]["vlan_groups"]["vmotion"]["members"] = {"servers"}; },
      "/devices/dc1-b/vlan_groups/vmotion", "differs from VLAN group \"vmotion\"");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["vlan_groups"].erase("vmotion"); },
                 "/devices/dc1-b", "lacks VLAN group \"vmotion\"");
  expect_problem(
      [](json& s) {
        s["devices"]["dc1-b"]["self_ips"]["extra"] = {
            {"address", "198.51.100.3/24"}, {"vlan", "wan"}, {"floating", true}};
      },
      "/devices/dc1-b/self_ips/extra", "floating self IP \"extra\" is not declared by device");
  expect_problem([](json& s) { s["devices"]["dc1-b"]["self_ips"].erase("server-gateway"); },
                 "/devices/dc1-b", "lacks floating self IP \"server-gateway\"");
  // Pools: the same on both units (the standby takes over the virtual servers).
  const json pool = {{"virtual", {{"address", "10.1.0.100"}, {"port", 80}}},
                     {"members", {{"10.1.0.21:80", json::object()}}}};
  expect_problem([&](json& s) { s["devices"]["dc1-a"]["pools"]["web"] = pool; }, "/devices/dc1-b",
                 "lacks pool \"web\" of device \"dc1-a\"");
  expect_problem([&](json& s) { s["devices"]["dc1-b"]["pools"]["web"] = pool; },
                 "/devices/dc1-b/pools/web", "pool \"web\" is not declared by device \"dc1-a\"");
  expect_problem(
      [&](json& s) {
        s["devices"]["dc1-a"]["pools"]["web"] = pool;
        s["devices"]["dc1-b"]["pools"]["web"] = pool;
        s["devices"]["dc1-b"]["pools"]["web"]["members"]["10.1.0.21:80"]["weight"] = 3;
      },
      "/devices/dc1-b/pools/web", "differs from pool \"web\"");
  json pooled = lab_site();
  pooled["devices"]["dc1-a"]["pools"]["web"] = pool;
  pooled["devices"]["dc1-b"]["pools"]["web"] = pool;
  EXPECT_TRUE(load(pooled).site) << dump(load(pooled).problems);
  // Fixed self IPs are each unit's own: they differ (the lab's wan-self and server-self do).
  // The parent interface of a VLAN may differ between the two hosts.
  json site = lab_site();
  site["devices"]["dc1-b"]["vlans"]["servers"]["interface"] = "ens4";
  auto result = load(site);
  EXPECT_TRUE(result.site) << dump(result.problems);
}

TEST(FailoverModel, FloatingSelfIps) {
  expect_problem(
      [](json& s) {
        s["devices"]["dc1-a"].erase("failover");
        s["failover_groups"].erase("dc1");
      },
      "/devices/dc1-a/self_ips/wan-floating/floating", "only a unit of a failover group");
  expect_problem([](json& s) { s["devices"]["dc1-a"]["self_ips"].erase("server-self"); },
                 "/devices/dc1-a/self_ips/server-gateway",
                 "needs a fixed (not floating) self IP of device \"dc1-a\" in 10.1.0.0/24");
  // The subnet must be one both units have: the second unit lacking it is reported there.
  expect_problem([](json& s) { s["devices"]["dc1-b"]["self_ips"].erase("server-self"); },
                 "/devices/dc1-b/self_ips/server-gateway",
                 "needs a fixed (not floating) self IP of device \"dc1-b\" in 10.1.0.0/24");
  // In the subnet, but on another VLAN: not the same segment.
  expect_problem([](json& s) { s["devices"]["dc1-b"]["self_ips"]["server-self"]["vlan"] = "wan"; },
                 "/devices/dc1-b/self_ips/server-gateway", "on \"vmotion\"");
  // A fixed self IP of another prefix length is not the same subnet.
  expect_problem(
      [](json& s) { s["devices"]["dc1-a"]["self_ips"]["server-self"]["address"] = "10.1.0.11/16"; },
      "/devices/dc1-a/self_ips/server-gateway", "in 10.1.0.0/24");
}

TEST(FailoverModel, TunnelEndpointsOfPairs) {
  expect_problem(
      [](json& s) {
        s["tunnels"]["dcx"]["endpoints"] = {{"dc1-a", "198.51.100.1"}, {"dc2", "203.0.113.1"}};
      },
      "/tunnels/dcx/endpoints/dc1-a", "is a unit of failover group \"dc1\"; name the group");
  expect_problem([](json& s) { s["tunnels"]["dcx"]["endpoints"]["dc1"] = "198.51.100.11"; },
                 "/tunnels/dcx/endpoints/dc1", "is not a floating self IP of device \"dc1-a\"");
  expect_problem([](json& s) { s["tunnels"]["dcx"]["endpoints"]["dc9"] = "198.51.100.9"; },
                 "/tunnels/dcx/endpoints/dc9", "unknown device or failover group \"dc9\"");
  // A fixed self IP of the units is not the pair's endpoint (it does not move).
  expect_problem([](json& s) { s["tunnels"]["dcx"]["endpoints"]["dc2"] = "203.0.113.12"; },
                 "/tunnels/dcx/endpoints/dc2", "is not a floating self IP of device \"dc2-a\"");
  expect_problem(
      [](json& s) {
        s["tunnels"]["dcx"]["endpoints"]["dc2"] = {{"address", "203.0.113.1"}, {"managed", false}};
      },
      "/tunnels/dcx/endpoints/dc2", "is a failover group of this file");
  // The units of a group are one data center: neither is an endpoint of its own.
  expect_problem(
      [](json& s) {
        s["tunnels"]["dcy"] = {{"profile", "etherip"},
                               {"endpoints", {{"dc1-b", "198.51.100.12"}, {"dc2", "203.0.113.1"}}}};
      },
      "/tunnels/dcy/endpoints/dc1-b", "is a unit of failover group \"dc1\"; name the group");
}

// --- IPsec on a pair's tunnel ------------------------------------------------------------------

// A pre-shared key file as model::read_psk wants it (the owner's alone, 32 bytes or more).
class PairIpsec : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("etherctl-pair-ipsec-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    psk_ = (dir_ / "dcx.psk").string();
    std::ofstream(psk_) << "a-pre-shared-key-of-the-pair-tunnel-0123456789\n";
    fs::permissions(psk_, fs::perms::owner_read | fs::perms::owner_write);
  }
  void TearDown() override { fs::remove_all(dir_); }

  json site() const {
    json s = lab_site();
    s["tunnels"]["dcx"]["ipsec"] = {{"psk_file", psk_}};
    return s;
  }

  fs::path dir_;
  std::string psk_;
};

TEST_F(PairIpsec, ATunnelBetweenTwoPairsMayHaveIpsec) {
  auto result = load(site());
  ASSERT_TRUE(result.site) << dump(result.problems);
  // Identities belong to the group (the end of the tunnel), whichever unit is active.
  json with_ids = site();
  with_ids["tunnels"]["dcx"]["ipsec"]["identities"] = {{"dc1", "dc1.example"},
                                                       {"dc2", "dc2.example"}};
  auto ids = load(with_ids);
  ASSERT_TRUE(ids.site) << dump(ids.problems);
  const auto active =
      plan::desired_objects(*ids.site, ids.site->devices.at("dc2-b"), plan::Role::Active);
  const plan::Object* conn = nullptr;
  for (const auto& o : active)
    if (o.kind == plan::kIpsecConnection) conn = &o;
  ASSERT_NE(conn, nullptr);
  EXPECT_EQ(conn->attrs.at("local"), "203.0.113.1");  // the pair's floating endpoint
  EXPECT_EQ(conn->attrs.at("remote"), "198.51.100.1");
  EXPECT_EQ(conn->attrs.at("local_id"), "dc2.example");
  EXPECT_EQ(conn->attrs.at("remote_id"), "dc1.example");
}

TEST_F(PairIpsec, AnIdentityOfOneUnitIsRefused) {
  json s = site();
  s["tunnels"]["dcx"]["ipsec"]["identities"] = {{"dc1-a", "dc1.example"}};
  auto result = load(s);
  EXPECT_FALSE(result.site);
  ASSERT_EQ(result.problems.size(), 1u) << dump(result.problems);
  EXPECT_EQ(result.problems[0].path, "/tunnels/dcx/ipsec/identities/dc1-a");
  EXPECT_NE(result.problems[0].message.find(
                "is a unit of failover group \"dc1\"; give the identity to the group"),
            std::string::npos)
      << dump(result.problems);
}

// --- desired objects by role ------------------------------------------------------------------

std::vector<std::string> keys(const plan::Objects& objects, const std::string& kind) {
  std::vector<std::string> out;
  for (const auto& o : objects) {
    if (o.kind == kind) out.push_back(o.key);
  }
  return out;
}

const plan::Object* find(const plan::Objects& objects, const std::string& kind,
                         const std::string& key) {
  for (const auto& o : objects) {
    if (o.kind == kind && o.key == key) return &o;
  }
  return nullptr;
}

TEST(FailoverPlan, ActiveHoldsFloatingAddressesAndJoinsTheSegments) {
  auto result = load(lab_site());
  ASSERT_TRUE(result.site) << dump(result.problems);
  const auto& site = *result.site;
  const auto active = plan::desired_objects(site, site.devices.at("dc1-a"), plan::Role::Active);
  // Fixed self IPs first: the first address of a subnet is its primary.
  EXPECT_EQ(keys(active, plan::kSelfIp),
            (std::vector<std::string>{"vmotion 10.1.0.11/24", "eth0 198.51.100.11/24",
                                      "vmotion 10.1.0.1/24", "eth0 198.51.100.1/24"}));
  EXPECT_EQ(find(active, plan::kSelfIp, "eth0 198.51.100.1/24")->attrs.value("floating", false),
            true);
  EXPECT_FALSE(find(active, plan::kSelfIp, "eth0 198.51.100.11/24")->attrs.contains("floating"));
  EXPECT_EQ(keys(active, plan::kPort), (std::vector<std::string>{"vmotion/eth1", "vmotion/dcx"}));
  EXPECT_EQ(find(active, plan::kPort, "vmotion/dcx")->attrs.value("flush_fdb", false), true);
  const plan::Object* tunnel = find(active, plan::kTunnel, "dcx");
  ASSERT_NE(tunnel, nullptr);
  EXPECT_EQ(tunnel->attrs.at("local"), "198.51.100.1");  // the group's floating endpoint
  EXPECT_EQ(tunnel->attrs.at("remote"), "203.0.113.1");
  EXPECT_TRUE(keys(active, plan::kIpvsSync).empty()) << "no pools, no sync daemons";
}

TEST(FailoverPlan, StandbyHoldsNoFloatingAddressAndKeepsOnlyItsServerPort) {
  auto result = load(lab_site());
  ASSERT_TRUE(result.site) << dump(result.problems);
  const auto& site = *result.site;
  const auto standby = plan::desired_objects(site, site.devices.at("dc1-b"), plan::Role::Standby);
  EXPECT_EQ(keys(standby, plan::kSelfIp),
            (std::vector<std::string>{"vmotion 10.1.0.12/24", "eth0 198.51.100.12/24"}));
  EXPECT_EQ(keys(standby, plan::kPort), (std::vector<std::string>{"vmotion/eth1"}));
  ASSERT_NE(find(standby, plan::kTunnel, "dcx"), nullptr) << "the tunnel stays, out of the bridge";
  EXPECT_EQ(keys(standby, plan::kRoute),
            keys(plan::desired_objects(site, site.devices.at("dc1-b")), plan::kRoute));
}

TEST(FailoverPlan, AGroupJoiningTwoVlansIsLeftWhole) {
  json site_json = lab_site();
  for (const char* unit : {"dc1-a", "dc1-b"}) {
    site_json["devices"][unit]["vlans"]["servers2"] = {{"interface", "eth2"}};
    site_json["devices"][unit]["vlan_groups"]["vmotion"]["members"] = {"servers", "servers2",
                                                                       "dcx"};
  }
  auto result = load(site_json);
  ASSERT_TRUE(result.site) << dump(result.problems);
  const auto standby =
      plan::desired_objects(*result.site, result.site->devices.at("dc1-b"), plan::Role::Standby);
  EXPECT_TRUE(keys(standby, plan::kPort).empty());
}

TEST(FailoverPlan, DevicesOutsideGroupsIgnoreTheRole) {
  auto result = model::load_site_file(fs::path(ETHERCTL_SOURCE_DIR) / "examples/site.json");
  ASSERT_TRUE(result.site) << dump(result.problems);
  const auto& device = result.site->devices.begin()->second;
  EXPECT_EQ(plan::desired_objects(*result.site, device, plan::Role::Standby).size(),
            plan::desired_objects(*result.site, device, plan::Role::Active).size());
}

TEST(FailoverPlan, SyncDaemonsOnBothUnitsWithPools) {
  json site_json = lab_site();
  for (const char* unit : {"dc1-a", "dc1-b"}) {
    site_json["devices"][unit]["pools"]["web"] = {
        {"virtual", {{"address", "198.51.100.80"}, {"port", 8080}}},
        {"members", {{"10.1.0.21:8080", json::object()}}}};
  }
  auto result = load(site_json);
  ASSERT_TRUE(result.site) << dump(result.problems);
  for (auto role : {plan::Role::Active, plan::Role::Standby}) {
    const auto objects =
        plan::desired_objects(*result.site, result.site->devices.at("dc1-b"), role);
    EXPECT_EQ(keys(objects, plan::kIpvsSync), (std::vector<std::string>{"master", "backup"}));
    EXPECT_EQ(find(objects, plan::kIpvsSync, "master")->attrs,
              (json{{"interface", "eth0"}, {"syncid", 51}}));
  }
}

// As the kernel holds the objects after an apply of `desired`.
plan::Objects applied(const plan::Objects& desired) {
  plan::Objects observed;
  for (auto o : desired) {
    o.path.clear();
    o.owned = !o.adopted;
    o.adopted = false;
    if (o.kind == plan::kVlanGroup) o.attrs.erase("mode");  // not observed
    o.attrs.erase("floating");
    o.attrs.erase("flush_fdb");
    observed.push_back(o);
  }
  return observed;
}

std::vector<std::string> ops(const plan::Plan& plan) {
  std::vector<std::string> out;
  for (const auto& c : plan.changes) {
    out.push_back(plan::to_string(c.op) + " " + c.subject().kind + " " + c.subject().key);
  }
  return out;
}

// The connection is the active role's; the policies (which only block) stay on the standby.
TEST_F(PairIpsec, TheConnectionIsTheActiveRolesAndComesBetweenAddressAndSegments) {
  auto result = load(site());
  ASSERT_TRUE(result.site) << dump(result.problems);
  const auto& unit = result.site->devices.at("dc1-b");
  const auto active = plan::desired_objects(*result.site, unit, plan::Role::Active);
  const auto standby = plan::desired_objects(*result.site, unit, plan::Role::Standby);
  EXPECT_EQ(keys(active, plan::kIpsecConnection), (std::vector<std::string>{"dcx"}));
  EXPECT_TRUE(keys(standby, plan::kIpsecConnection).empty());
  const std::vector<std::string> policy{"198.51.100.1 -> 203.0.113.1"};
  EXPECT_EQ(keys(active, plan::kIpsecPolicy), policy);
  EXPECT_EQ(keys(standby, plan::kIpsecPolicy), policy);
  EXPECT_NE(find(standby, plan::kTunnel, "dcx")->attrs.value("ipsec_reqid", 0), 0)
      << "the standby's datapath accepts only decrypted EtherIP too";
  // Up: the address, then the connection (charon initiates from it at once), then the
  // segments. Down: the segments, then the connection (the peer is told from the address
  // still held), then the address.
  EXPECT_EQ(ops(plan::make_plan(active, applied(standby))),
            (std::vector<std::string>{"create self_ip vmotion 10.1.0.1/24",
                                      "create self_ip eth0 198.51.100.1/24",
                                      "create ipsec_connection dcx", "create port vmotion/dcx"}));
  EXPECT_EQ(ops(plan::make_plan(standby, applied(active))),
            (std::vector<std::string>{"delete port vmotion/dcx", "delete ipsec_connection dcx",
                                      "delete self_ip vmotion 10.1.0.1/24",
                                      "delete self_ip eth0 198.51.100.1/24"}));
}

TEST(FailoverPlan, TransitionsLeaveBeforeReleasingAndTakeBeforeJoining) {
  auto result = load(lab_site());
  ASSERT_TRUE(result.site) << dump(result.problems);
  const auto& unit = result.site->devices.at("dc1-a");
  const auto active = plan::desired_objects(*result.site, unit, plan::Role::Active);
  const auto standby = plan::desired_objects(*result.site, unit, plan::Role::Standby);
  EXPECT_EQ(
      ops(plan::make_plan(standby, applied(active))),
      (std::vector<std::string>{"delete port vmotion/dcx", "delete self_ip vmotion 10.1.0.1/24",
                                "delete self_ip eth0 198.51.100.1/24"}));
  EXPECT_EQ(
      ops(plan::make_plan(active, applied(standby))),
      (std::vector<std::string>{"create self_ip vmotion 10.1.0.1/24",
                                "create self_ip eth0 198.51.100.1/24", "create port vmotion/dcx"}));
}

}  // namespace
}  // namespace etherctl
