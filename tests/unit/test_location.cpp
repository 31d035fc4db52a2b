// Virtual Location: member -> MAC -> bridge port -> local/remote/unknown, and the weight policy.
#include <gtest/gtest.h>

#include "location/location.hpp"
#include "model/site.hpp"

using namespace etherctl::location;
using etherctl::model::IpAddress;

namespace {

const char* kSite = R"({
  "etherctl": 1,
  "devices": {"dc1": {
    "vlans": {"wan": {"interface": "eth0"}, "servers": {"interface": "eth1"},
              "mgmt": {"interface": "eth2"}},
    "vlan_groups": {"vmotion": {"members": ["servers", "dcx"]}},
    "self_ips": {
      "wan-self": {"address": "198.51.100.1/24", "vlan": "wan"},
      "server-self": {"address": "10.1.0.1/24", "vlan": "vmotion"},
      "server-v6": {"address": "2001:db8:1::1/64", "vlan": "vmotion"},
      "mgmt-self": {"address": "192.168.9.1/24", "vlan": "mgmt"}
    }
  }, "dc2": {
    "vlans": {"wan": {"interface": "eth0"}},
    "self_ips": {"wan-self": {"address": "203.0.113.1/24", "vlan": "wan"}}
  }},
  "tunnels": {"dcx": {"profile": "etherip",
                      "endpoints": {"dc1": "198.51.100.1", "dc2": "203.0.113.1"}}}
})";

class LocationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto result = etherctl::model::load_site(kSite);
    ASSERT_TRUE(result.site) << result.problems.at(0).path << ": " << result.problems.at(0).message;
    site_ = *result.site;
  }
  MemberLocation locate(const std::string& address) {
    return etherctl::location::locate(site_, site_.devices.at("dc1"), *IpAddress::parse(address),
                                      observation_);
  }
  void neighbour(const std::string& address, const std::string& mac, bool usable = true) {
    observation_.neighbours.push_back({"vmotion", *IpAddress::parse(address), mac, usable});
  }
  etherctl::model::Site site_;
  Observation observation_;
};

}  // namespace

TEST_F(LocationTest, LocalPortRemoteTunnelUnknownWithoutFdb) {
  neighbour("10.1.0.21", "02:00:00:00:00:21");
  neighbour("10.1.0.22", "02:00:00:00:00:22");
  neighbour("10.1.0.23", "02:00:00:00:00:23");
  observation_.fdb = {{"vmotion", "servers", "02:00:00:00:00:21"},
                      {"vmotion", "dcx", "02:00:00:00:00:22"},
                      {"other", "servers", "02:00:00:00:00:23"}};
  auto local = locate("10.1.0.21");
  EXPECT_EQ(local.location, Location::Local);
  EXPECT_EQ(local.group, "vmotion");
  EXPECT_EQ(local.port, "servers");
  EXPECT_FALSE(local.resolve);
  auto remote = locate("10.1.0.22");
  EXPECT_EQ(remote.location, Location::Remote);
  EXPECT_EQ(remote.port, "dcx");
  EXPECT_EQ(remote.reason, "MAC 02:00:00:00:00:22 was learned on tunnel \"dcx\"");
  auto unknown = locate("10.1.0.23");  // its FDB entry is on another bridge
  EXPECT_EQ(unknown.location, Location::Unknown);
  EXPECT_EQ(unknown.mac, "02:00:00:00:00:23");
}

TEST_F(LocationTest, MacsCompareCaseInsensitively) {
  neighbour("2001:db8:1::5", "02:AB:00:00:00:05");
  observation_.fdb = {{"vmotion", "dcx", "02:ab:00:00:00:05"}};
  EXPECT_EQ(locate("2001:db8:1::5").location, Location::Remote);
}

TEST_F(LocationTest, MissingOrStaleNeighbourAsksForResolution) {
  auto missing = locate("10.1.0.30");
  EXPECT_EQ(missing.location, Location::Unknown);
  EXPECT_TRUE(missing.resolve);
  neighbour("10.1.0.31", "02:00:00:00:00:31", false);  // STALE: still the best guess
  observation_.fdb = {{"vmotion", "servers", "02:00:00:00:00:31"}};
  auto stale = locate("10.1.0.31");
  EXPECT_EQ(stale.location, Location::Local);
  EXPECT_TRUE(stale.resolve);
  neighbour("10.1.0.32", "", false);  // FAILED: no MAC at all
  EXPECT_EQ(locate("10.1.0.32").location, Location::Unknown);
}

TEST_F(LocationTest, SubnetsOutsideGroups) {
  EXPECT_EQ(locate("192.168.9.20").location, Location::Local);  // VLAN not stretched
  auto nowhere = locate("172.16.0.1");
  EXPECT_EQ(nowhere.location, Location::Unknown);
  EXPECT_FALSE(nowhere.resolve);
  EXPECT_EQ(nowhere.group, "");
}

TEST(Weights, RemoteMembersAreQuiescedWhileEnoughLocalOnesCarryTraffic) {
  using M = WeightedMember;
  std::vector<M> members = {{1, Location::Local}, {2, Location::Remote}, {3, Location::Unknown}};
  EXPECT_EQ(effective_weights(members, 1), (std::vector<int>{1, 0, 3}));
  EXPECT_EQ(effective_weights(members, 0), (std::vector<int>{1, 0, 3}));
  // Not enough local members: remote ones carry traffic rather than nothing.
  EXPECT_EQ(effective_weights(members, 2), (std::vector<int>{1, 2, 3}));
  // A local member with weight 0 (disabled in the file) does not count as active.
  members[0].configured = 0;
  EXPECT_EQ(effective_weights(members, 1), (std::vector<int>{0, 2, 3}));
  EXPECT_EQ(effective_weights({}, 1), std::vector<int>{});
}

TEST_F(LocationTest, AssessPool) {
  auto result = etherctl::model::load_site(R"({
    "etherctl": 1,
    "devices": {"dc1": {
      "vlans": {"wan": {"interface": "eth0"}, "servers": {"interface": "eth1"}},
      "vlan_groups": {"vmotion": {"members": ["servers", "dcx"]}},
      "self_ips": {"wan-self": {"address": "198.51.100.1/24", "vlan": "wan"},
                   "server-self": {"address": "10.1.0.1/24", "vlan": "vmotion"}},
      "pools": {"web": {
        "virtual": {"address": "192.0.2.10", "port": 80, "vlan": "wan"},
        "members": {"10.1.0.21:80": {}, "10.1.0.22:80": {"weight": 2}, "10.1.0.23:80": {}},
        "monitor": {"type": "virtual_location", "min_active_members": 1}}}
    }, "dc2": {
      "vlans": {"wan": {"interface": "eth0"}},
      "self_ips": {"wan-self": {"address": "203.0.113.1/24", "vlan": "wan"}}
    }},
    "tunnels": {"dcx": {"profile": "etherip",
                        "endpoints": {"dc1": "198.51.100.1", "dc2": "203.0.113.1"}}}
  })");
  ASSERT_TRUE(result.site) << result.problems.at(0).message;
  auto& device = result.site->devices.at("dc1");
  neighbour("10.1.0.21", "02:00:00:00:00:21");
  neighbour("10.1.0.22", "02:00:00:00:00:22");
  observation_.fdb = {{"vmotion", "servers", "02:00:00:00:00:21"},
                      {"vmotion", "dcx", "02:00:00:00:00:22"}};
  auto members = assess_pool(*result.site, device, device.pools.at("web"), observation_);
  ASSERT_EQ(members.size(), 3u);
  EXPECT_EQ(members[0].key, "10.1.0.21:80");
  EXPECT_EQ(members[0].where.location, Location::Local);
  EXPECT_EQ(members[0].effective, 1);
  EXPECT_EQ(members[1].where.location, Location::Remote);
  EXPECT_EQ(members[1].configured, 2);
  EXPECT_EQ(members[1].effective, 0);
  EXPECT_EQ(members[2].where.location, Location::Unknown);
  EXPECT_EQ(members[2].effective, 1);
  // The local member leaves too: the remote one carries traffic again.
  observation_.fdb[0].port = "dcx";
  members = assess_pool(*result.site, device, device.pools.at("web"), observation_);
  EXPECT_EQ(members[0].where.location, Location::Remote);
  EXPECT_EQ(members[0].effective, 1);
  EXPECT_EQ(members[1].effective, 2);
  // Without a monitor nothing is quiesced.
  auto unmonitored = device.pools.at("web");
  unmonitored.monitor.reset();
  observation_.fdb[0].port = "servers";
  members = assess_pool(*result.site, device, unmonitored, observation_);
  EXPECT_EQ(members[1].effective, 2);
}
