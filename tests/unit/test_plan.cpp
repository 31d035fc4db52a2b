// Planning: diff of desired against observed objects, ownership and ordering. No kernel.
#include <gtest/gtest.h>

#include "model/site.hpp"
#include "plan/plan.hpp"
#include "plan/render.hpp"

using namespace etherctl::plan;

namespace {

Objects example_desired() {
  auto result =
      etherctl::model::load_site_file(std::string(ETHERCTL_SOURCE_DIR) + "/examples/site.json");
  EXPECT_TRUE(result.site);
  return desired_objects(*result.site, result.site->devices.at("dc1-edge"));
}

Object foreign_link(const std::string& name, bool up = true, int mtu = 1500) {
  return {kVlan, name, name, "", {{"mtu", mtu}, {"up", up}, {"type", "veth"}}, false, false};
}

// The kernel state after a successful apply: every desired object, owned unless adopted.
Objects as_applied(const Objects& desired) {
  Objects observed;
  for (auto o : desired) {
    o.path.clear();
    o.owned = !o.adopted;
    o.adopted = false;
    o.attrs.erase("mode");
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

const Object& find(Objects& objects, const std::string& kind, const std::string& key) {
  for (auto& o : objects) {
    if (o.kind == kind && o.key == key) return o;
  }
  throw std::runtime_error("no " + kind + " " + key);
}

}  // namespace

TEST(Plan, FromEmptyCreatesParentsBeforeChildren) {
  Objects observed = {foreign_link("eth0", false), foreign_link("eth1")};
  Plan plan = make_plan(example_desired(), observed);
  ASSERT_TRUE(plan.conflicts.empty());
  EXPECT_EQ(ops(plan), (std::vector<std::string>{
                           "create vlan servers",
                           "modify vlan eth0",  // adopted: brought up
                           "create vlan_group vmotion",
                           "create self_ip vmotion 10.1.0.1/24",
                           "create self_ip vmotion 2001:db8:1::1/64",
                           "create self_ip eth0 198.51.100.1/24",
                           "create route 203.0.113.0/24",
                           "create port vmotion/servers",  // joined last
                       }));
  EXPECT_EQ(plan.changes[0].desired.path, "/devices/dc1-edge/vlans/servers");
  EXPECT_EQ(plan.changes[1].before(), (nlohmann::json{{"up", false}}));
  EXPECT_EQ(plan.changes[1].after(), (nlohmann::json{{"up", true}}));
}

TEST(Plan, SecondRunHasNoChanges) {
  Objects desired = example_desired();
  Objects observed = as_applied(desired);
  observed.push_back(foreign_link("eth1"));
  Plan plan = make_plan(desired, observed);
  EXPECT_TRUE(plan.empty()) << render_text(plan, false);
  EXPECT_EQ(plan.unchanged, static_cast<int>(desired.size()));
}

TEST(Plan, MtuChangesInPlace) {
  Objects desired = example_desired();
  Objects observed = as_applied(desired);
  observed.push_back(foreign_link("eth1"));
  for (auto& o : observed) {
    if (o.key == "servers") o.attrs["mtu"] = 1400;
  }
  Plan plan = make_plan(desired, observed);
  EXPECT_EQ(ops(plan), std::vector<std::string>{"modify vlan servers"});
  EXPECT_NE(render_text(plan, false).find("mtu: 1400 -> 1500"), std::string::npos);
}

TEST(Plan, TagChangeRecreatesTheVlanAndWhatHangsOnIt) {
  Objects desired = example_desired();
  Objects observed = as_applied(desired);
  observed.push_back(foreign_link("eth1"));
  for (auto& o : observed) {
    if (o.key == "servers") o.attrs["tag"] = 99;
  }
  Plan plan = make_plan(desired, observed);
  EXPECT_EQ(ops(plan),
            (std::vector<std::string>{"delete port vmotion/servers", "delete vlan servers",
                                      "create vlan servers", "create port vmotion/servers"}));
}

TEST(Plan, RemovedObjectsAreDeletedChildrenFirst) {
  Objects observed = as_applied(example_desired());
  observed.push_back(foreign_link("eth1"));
  Plan plan = make_plan({}, observed);
  EXPECT_EQ(ops(plan), (std::vector<std::string>{
                           "delete port vmotion/servers",  // left first
                           "delete route 203.0.113.0/24",
                           "delete self_ip vmotion 10.1.0.1/24",
                           "delete self_ip vmotion 2001:db8:1::1/64",
                           "delete self_ip eth0 198.51.100.1/24",
                           "delete vlan servers",
                           "delete vlan_group vmotion",
                       }));
}

TEST(Plan, ForeignObjectsAreNeverTouched) {
  Objects desired = example_desired();
  Objects observed = as_applied(desired);
  observed.push_back(foreign_link("eth1"));
  observed.push_back(foreign_link("vnet7"));
  observed.push_back(
      {kPort, "vmotion/vnet7", "vmotion/vnet7", "", {{"bridge", "vmotion"}, {"link", "vnet7"}}});
  observed.push_back(
      {kSelfIp, "eth1 192.0.2.1/24", "", "", {{"interface", "eth1"}, {"address", "192.0.2.1/24"}}});
  observed.push_back(
      {kRoute, "192.0.2.0/24", "", "", {{"destination", "192.0.2.0/24"}, {"gateway", ""}}});
  Plan plan = make_plan(desired, observed);
  EXPECT_TRUE(plan.empty()) << render_text(plan, false);
  EXPECT_TRUE(plan.conflicts.empty());
  Plan destroy = make_plan({}, observed);
  for (const auto& c : destroy.changes) {
    EXPECT_NE(c.subject().key, "vmotion/vnet7");
    EXPECT_NE(c.subject().key, "eth1 192.0.2.1/24");
    EXPECT_NE(c.subject().key, "192.0.2.0/24");
  }
}

TEST(Plan, AdoptedPortOfOurBridgeIsOurs) {
  auto result = etherctl::model::load_site(R"({"etherctl": 1, "devices": {"d": {
    "vlans": {"a": {"interface": "eth1"}, "b": {"interface": "eth2"}},
    "vlan_groups": {"g": {"members": ["a"]}}}}})");
  ASSERT_TRUE(result.site);
  Objects desired = desired_objects(*result.site, result.site->devices.at("d"));
  Objects observed = {foreign_link("eth1"),
                      foreign_link("eth2"),
                      {kVlanGroup, "g", "g", "", {{"up", true}}, true},
                      {kPort, "g/eth1", "", "", {{"bridge", "g"}, {"link", "eth1"}}},
                      {kPort, "g/eth2", "", "", {{"bridge", "g"}, {"link", "eth2"}}}};
  Plan plan = make_plan(desired, observed);
  EXPECT_EQ(ops(plan), std::vector<std::string>{"delete port g/eth2"});
}

TEST(Plan, NameTakenByForeignInterfaceIsAConflict) {
  Objects observed = {foreign_link("eth0"), foreign_link("eth1"), foreign_link("vmotion")};
  Plan plan = make_plan(example_desired(), observed);
  ASSERT_EQ(plan.conflicts.size(), 1u);
  EXPECT_EQ(plan.conflicts[0].path, "/devices/dc1-edge/vlan_groups/vmotion");
  EXPECT_NE(plan.conflicts[0].message.find("not created by etherctl"), std::string::npos);
}

TEST(Plan, MissingInterfacesAreConflicts) {
  Plan plan = make_plan(example_desired(), {});
  std::vector<std::string> paths;
  for (const auto& c : plan.conflicts) paths.push_back(c.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"/devices/dc1-edge/vlans/servers/interface",
                                             "/devices/dc1-edge/vlans/wan"}));
}

TEST(Plan, ForeignAddressElsewhereIsAConflictOnlyWhenItDiffers) {
  Objects desired = example_desired();
  Objects observed = as_applied(desired);
  observed.push_back(foreign_link("eth1"));
  for (auto& o : observed) {
    if (o.kind == kRoute) {
      o.owned = false;
      o.attrs["gateway"] = "198.51.100.253";
    }
  }
  Plan plan = make_plan(desired, observed);
  ASSERT_EQ(plan.conflicts.size(), 1u);
  EXPECT_EQ(plan.conflicts[0].path, "/devices/dc1-edge/routes/to-dc2");
}

TEST(Plan, JsonChangesCarryPathsAndValues) {
  Objects observed = {foreign_link("eth0"), foreign_link("eth1")};
  Plan plan = make_plan(example_desired(), observed);
  auto changes = changes_json(plan);
  EXPECT_EQ(changes[0]["op"], "create");
  EXPECT_EQ(changes[0]["kind"], "vlan");
  EXPECT_EQ(changes[0]["path"], "/devices/dc1-edge/vlans/servers");
  EXPECT_EQ(changes[0]["after"]["tag"], 100);
  EXPECT_TRUE(changes[0]["before"].is_null());
  EXPECT_EQ(summary_json(plan)["create"], 7);
  (void)find;
}

// A tunnel to a peer that etherctl does not manage (a BIG-IP, an OpenBSD etherip(4), a FreeBSD
// gif(4)): the same tunnel object as between two devices of the file, its remote the peer's
// address; the same with the string and the object form of the managed endpoint.
TEST(Plan, TunnelToAnUnmanagedPeerIsAnOrdinaryTunnel) {
  const std::string devices = R"("devices": {"d": {
    "vlans": {"w": {"interface": "eth0"}, "s": {"interface": "eth1"}},
    "vlan_groups": {"g": {"members": ["s", "t"]}},
    "self_ips": {"ws": {"address": "198.51.100.1/24", "vlan": "w"}}}})";
  Objects by_form[2];
  int i = 0;
  for (const std::string local :
       {R"("198.51.100.1")", R"({"address": "198.51.100.1", "managed": true})"}) {
    auto result = etherctl::model::load_site(
        R"({"etherctl": 1, )" + devices + R"(, "tunnels": {"t": {"profile": "etherip",
        "accept_reversed_header": true, "endpoints": {"d": )" +
        local + R"(, "obsd": {"address": "203.0.113.7", "managed": false}}}}})");
    ASSERT_TRUE(result.site) << (result.problems.empty() ? "" : result.problems[0].message);
    const auto& endpoints = result.site->tunnels.at("t").endpoints;
    EXPECT_TRUE(endpoints.at("d").managed);
    EXPECT_FALSE(endpoints.at("obsd").managed);
    by_form[i++] = desired_objects(*result.site, result.site->devices.at("d"));
  }
  const Object& tunnel = find(by_form[0], kTunnel, "t");
  EXPECT_EQ(tunnel.attrs["local"], "198.51.100.1");
  EXPECT_EQ(tunnel.attrs["remote"], "203.0.113.7");
  EXPECT_EQ(tunnel.attrs["accept_reversed"], true);
  EXPECT_EQ(tunnel.path, "/tunnels/t");
  EXPECT_EQ(nlohmann::json(by_form[0].size()), nlohmann::json(by_form[1].size()));
  EXPECT_EQ(find(by_form[1], kTunnel, "t").attrs, tunnel.attrs);
  find(by_form[0], kPort, "g/t");  // a port of its VLAN group, as any tunnel
}
