// Pools: parsing defaults, desired IPVS objects and their planning. No kernel.
#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>

#include "model/pools.hpp"
#include "model/site.hpp"
#include "plan/plan.hpp"

using namespace etherctl::plan;
using etherctl::model::load_site;

namespace {

const char* kSite = R"({
  "etherctl": 1,
  "devices": {"dc1": {
   "vlans": {"front": {"interface": "eth0"}},
   "self_ips": {"v4": {"address": "192.0.2.1/24", "vlan": "front"},
                "v6": {"address": "2001:db8::1/64", "vlan": "front"}},
   "pools": {
    "web": {
      "virtual": {"address": "192.0.2.10", "port": 80},
      "members": {"10.1.0.21:80": {}, "10.1.0.22:8080": {"weight": 2}},
      "monitor": {"type": "virtual_location"}
    },
    "dns6": {
      "virtual": {"address": "2001:db8::53", "port": 53, "protocol": "udp", "scheduler": "mh"},
      "members": {"[2001:db8:1::5]:53": {"weight": 0}}
    }
  }}}
})";

const std::string kWeb = "tcp 192.0.2.10:80";
const std::string kDns = "udp [2001:db8::53]:53";

etherctl::model::Site site() {
  auto result = load_site(kSite);
  EXPECT_TRUE(result.site) << (result.problems.empty() ? "" : result.problems[0].message);
  return *result.site;
}

// Every desired object of dc1: the VLAN, its self IPs, the pools' virtual addresses, IPVS.
Objects desired_all() {
  auto s = site();
  return desired_objects(s, s.devices.at("dc1"));
}

// The IPVS objects only.
Objects desired() {
  Objects ipvs;
  for (auto& o : desired_all())
    if (o.kind == kIpvsService || o.kind == kIpvsMember) ipvs.push_back(std::move(o));
  return ipvs;
}

Objects as_applied(const Objects& objects) {
  Objects observed;
  for (auto o : objects) {
    o.path.clear();
    o.owned = true;
    observed.push_back(o);
  }
  return observed;
}

std::vector<std::string> ops(const Plan& plan) {
  std::vector<std::string> out;
  for (const auto& c : plan.changes) {
    out.push_back(to_string(c.op) + " " + c.subject().kind + " " + c.subject().key);
  }
  return out;
}

Object* find(Objects& objects, const std::string& key) {
  for (auto& o : objects) {
    if (o.key == key) return &o;
  }
  return nullptr;
}

}  // namespace

TEST(Pools, ParseAppliesDefaults) {
  auto s = site();
  const auto& web = s.devices.at("dc1").pools.at("web");
  EXPECT_EQ(web.protocol, "tcp");
  EXPECT_EQ(web.scheduler, "wlc");
  EXPECT_EQ(web.port, 80);
  EXPECT_EQ(web.members.at("10.1.0.21:80").weight, 1);
  EXPECT_EQ(web.members.at("10.1.0.22:8080").port, 8080);
  ASSERT_TRUE(web.monitor);
  EXPECT_EQ(web.monitor->interval, 5);
  EXPECT_EQ(web.monitor->min_active_members, 1);
  const auto& dns = s.devices.at("dc1").pools.at("dns6");
  EXPECT_EQ(dns.address.family, 6);
  EXPECT_FALSE(dns.monitor);
  EXPECT_EQ(dns.members.at("[2001:db8:1::5]:53").weight, 0);
}

TEST(Pools, Endpoints) {
  std::string error;
  auto v4 = etherctl::model::parse_endpoint("10.1.0.21:80", &error);
  ASSERT_TRUE(v4);
  EXPECT_EQ(etherctl::model::endpoint_string(v4->address, v4->port), "10.1.0.21:80");
  auto v6 = etherctl::model::parse_endpoint("[2001:db8:0::5]:443", &error);
  ASSERT_TRUE(v6);
  EXPECT_EQ(etherctl::model::endpoint_string(v6->address, v6->port), "[2001:db8::5]:443");
  for (const char* bad : {"10.1.0.21", "10.1.0.21:", "10.1.0.21:65536", "[10.1.0.21]:80",
                          "[2001:db8::5]80", "2001:db8::5:80", "host:80", ":80"}) {
    EXPECT_FALSE(etherctl::model::parse_endpoint(bad, &error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

TEST(Pools, DesiredObjects) {
  Objects objects = desired();
  ASSERT_EQ(objects.size(), 5u);
  Object* web = find(objects, kWeb);
  ASSERT_TRUE(web);
  EXPECT_EQ(web->kind, kIpvsService);
  EXPECT_EQ(web->name, "web");
  EXPECT_EQ(web->path, "/devices/dc1/pools/web");
  EXPECT_EQ(
      web->attrs,
      (nlohmann::json{
          {"protocol", "tcp"}, {"address", "192.0.2.10"}, {"port", 80}, {"scheduler", "wlc"}}));
  Object* member = find(objects, kWeb + " -> 10.1.0.22:8080");
  ASSERT_TRUE(member);
  EXPECT_EQ(member->kind, kIpvsMember);
  EXPECT_EQ(member->path, "/devices/dc1/pools/web/members/10.1.0.22:8080");
  EXPECT_EQ(member->attrs, (nlohmann::json{{"service", kWeb},
                                           {"address", "10.1.0.22"},
                                           {"port", 8080},
                                           {"weight", 2},
                                           {"forward", "masq"}}));
  Object* v6 = find(objects, kDns + " -> [2001:db8:1::5]:53");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->attrs["address"], "2001:db8:1::5");
}

TEST(Pools, CreatesServicesBeforeMembersAndThenNothing) {
  Plan plan = make_plan(desired(), {});
  ASSERT_TRUE(plan.conflicts.empty());
  EXPECT_EQ(ops(plan), (std::vector<std::string>{
                           "create ipvs_service " + kDns,
                           "create ipvs_service " + kWeb,
                           "create ipvs_member " + kDns + " -> [2001:db8:1::5]:53",
                           "create ipvs_member " + kWeb + " -> 10.1.0.21:80",
                           "create ipvs_member " + kWeb + " -> 10.1.0.22:8080",
                       }));
  Plan again = make_plan(desired(), as_applied(desired()));
  EXPECT_TRUE(again.empty());
  EXPECT_EQ(again.unchanged, 5);
}

TEST(Pools, WeightAndSchedulerChangeInPlace) {
  Objects observed = as_applied(desired());
  find(observed, kWeb)->attrs["scheduler"] = "rr";
  find(observed, kWeb + " -> 10.1.0.21:80")->attrs["weight"] = 7;
  Plan plan = make_plan(desired(), observed);
  EXPECT_EQ(ops(plan), (std::vector<std::string>{
                           "modify ipvs_service " + kWeb,
                           "modify ipvs_member " + kWeb + " -> 10.1.0.21:80",
                       }));
  EXPECT_EQ(plan.changes[1].before(), (nlohmann::json{{"weight", 7}}));
  EXPECT_EQ(plan.changes[1].after(), (nlohmann::json{{"weight", 1}}));
}

TEST(Pools, RemovedPoolDeletesMembersBeforeTheService) {
  Objects observed = as_applied(desired());
  Objects wanted;
  for (const auto& o : desired()) {
    if (o.key.rfind(kWeb, 0) != 0) wanted.push_back(o);
  }
  // A member someone added to our service is ours too (members carry no mark of their own).
  observed.push_back({kIpvsMember, kWeb + " -> 10.9.9.9:80", "", "",
                      nlohmann::json{{"service", kWeb}, {"address", "10.9.9.9"}, {"port", 80}},
                      true});
  Plan plan = make_plan(wanted, observed);
  ASSERT_EQ(plan.changes.size(), 4u);
  EXPECT_EQ(plan.changes.back().op, Op::Delete);
  EXPECT_EQ(plan.changes.back().observed.kind, kIpvsService);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(plan.changes[i].observed.kind, kIpvsMember);
}

TEST(Pools, ForeignServicesAreNeverTouched) {
  Object foreign{
      kIpvsService,
      "tcp 198.51.100.7:443",
      "",
      "",
      nlohmann::json{
          {"protocol", "tcp"}, {"address", "198.51.100.7"}, {"port", 443}, {"scheduler", "rr"}},
      false};
  Plan plan = make_plan({}, {foreign});
  EXPECT_TRUE(plan.empty());
  // The same address as a pool: a conflict even when everything matches, since the members
  // that would follow belong to whoever made the service.
  Objects observed = {foreign};
  Objects wanted = desired();
  Object same = *find(wanted, kWeb);
  same.path.clear();
  observed.push_back(same);
  plan = make_plan(desired(), observed);
  ASSERT_EQ(plan.conflicts.size(), 1u);
  EXPECT_EQ(plan.conflicts[0].path, "/devices/dc1/pools/web");
  EXPECT_NE(plan.conflicts[0].message.find("not created by etherctl"), std::string::npos);
}

// A virtual address that is no self IP gets nothing from IPVS unless it is local: etherctl
// adds it as a host address on the VLAN of the self IP whose subnet holds it, one address for
// every pool (port) that shares it, marked and planned like a self IP.
TEST(Pools, VirtualAddressesBecomeHostAddressesOnTheClientsVlan) {
  Objects all = desired_all();
  Object* v4 = find(all, "eth0 192.0.2.10/32");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->kind, kSelfIp);
  EXPECT_EQ(v4->path, "/devices/dc1/pools/web/virtual/address");
  EXPECT_EQ(v4->attrs, (nlohmann::json{{"interface", "eth0"}, {"address", "192.0.2.10/32"}}));
  Object* v6 = find(all, "eth0 2001:db8::53/128");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->path, "/devices/dc1/pools/dns6/virtual/address");
  Plan plan = make_plan(all, {});
  std::vector<std::string> order = ops(plan);
  auto at = [&](const std::string& op) {
    return std::find(order.begin(), order.end(), op) - order.begin();
  };
  EXPECT_LT(at("create self_ip eth0 192.0.2.10/32"), at("create ipvs_service " + kWeb));
  // Removing the pool removes its address (after the service).
  Objects without_web;
  for (const auto& o : all)
    if (o.path.rfind("/devices/dc1/pools/web", 0) != 0) without_web.push_back(o);
  Plan removal = make_plan(without_web, as_applied(all));
  std::vector<std::string> gone = ops(removal);
  ASSERT_EQ(gone.size(), 4u) << ::testing::PrintToString(gone);
  EXPECT_EQ(gone.back(), "delete self_ip eth0 192.0.2.10/32");
}

namespace {

etherctl::model::LoadResult with_pools(const std::string& pools, const std::string& extra = "") {
  return load_site(R"({"etherctl": 1, "devices": {"d": {
    "vlans": {"wan": {"interface": "eth0"}, "lan": {"interface": "eth1"},
              "servers": {"interface": "eth2"}},
    "vlan_groups": {"g": {"members": ["servers"]}},
    "self_ips": {"w": {"address": "198.51.100.1/24", "vlan": "wan"},
                 "l": {"address": "198.51.100.129/25", "vlan": "lan"},
                 "s": {"address": "10.1.0.1/24", "vlan": "g"})" +
                   extra + R"(},
    "pools": )" + pools +
                   "}}}");
}

std::string pool(const std::string& address, int port, const std::string& vlan = "") {
  return R"({"virtual": {"address": ")" + address + R"(", "port": )" + std::to_string(port) +
         (vlan.empty() ? "" : R"(, "vlan": ")" + vlan + "\"") +
         R"(}, "members": {"10.1.0.21:80": {}}})";
}

std::vector<std::string> self_ip_keys(const etherctl::model::LoadResult& result) {
  std::vector<std::string> keys;
  for (const auto& o : desired_objects(*result.site, result.site->devices.at("d")))
    if (o.kind == kSelfIp) keys.push_back(o.key);
  std::sort(keys.begin(), keys.end());
  return keys;
}

}  // namespace

TEST(Pools, WhereTheVirtualAddressGoes) {
  // Equal to a self IP: nothing is added (the file that declared it so keeps working).
  auto self = with_pools(R"({"p": )" + pool("10.1.0.1", 80) + "}");
  ASSERT_TRUE(self.site) << self.problems[0].message;
  EXPECT_EQ(self_ip_keys(self),
            (std::vector<std::string>{"eth0 198.51.100.1/24", "eth1 198.51.100.129/25",
                                      "g 10.1.0.1/24"}));
  // In one self IP's subnet: on its VLAN group (the bridge). Two pools (two ports) share it.
  auto shared = with_pools(R"({"http": )" + pool("10.1.0.100", 80) + R"(, "https": )" +
                           pool("10.1.0.100", 443) + "}");
  ASSERT_TRUE(shared.site) << shared.problems[0].message;
  auto keys = self_ip_keys(shared);
  EXPECT_EQ(std::count(keys.begin(), keys.end(), "g 10.1.0.100/32"), 1);
  // Named explicitly: there, even outside every subnet.
  auto named = with_pools(R"({"p": )" + pool("192.0.2.10", 80, "wan") + "}");
  ASSERT_TRUE(named.site) << named.problems[0].message;
  keys = self_ip_keys(named);
  EXPECT_EQ(std::count(keys.begin(), keys.end(), "eth0 192.0.2.10/32"), 1);
}

TEST(Pools, AVirtualAddressEtherctlCannotPlaceIsRefused) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {pool("192.0.2.10", 80), "/devices/d/pools/p/virtual/address",
       "192.0.2.10 is no self IP and in no self IP's subnet"},
      {pool("192.0.2.10", 80), "/devices/d/pools/p/virtual/address",
       "\"virtual\": {\"vlan\": ...}"},
      // Two subnets hold it (a /24 and a /25 inside it): which VLAN faces the clients?
      {pool("198.51.100.200", 80), "/devices/d/pools/p/virtual/address",
       "in the subnets of self IPs on \"lan\", \"wan\""},
      {pool("192.0.2.10", 80, "wna"), "/devices/d/pools/p/virtual/vlan",
       "unknown VLAN or VLAN group \"wna\"; did you mean \"wan\"?"},
      {pool("192.0.2.10", 80, "servers"), "/devices/d/pools/p/virtual/vlan",
       "a member of VLAN group \"g\""},
  };
  for (const auto& [p, path, message] : cases) {
    auto result = with_pools(R"({"p": )" + p + "}");
    ASSERT_FALSE(result.site) << p;
    bool found = false;
    for (const auto& problem : result.problems)
      found |= problem.path == path && problem.message.find(message) != std::string::npos;
    EXPECT_TRUE(found) << p << "\n"
                       << result.problems[0].path << ": " << result.problems[0].message;
  }
}
