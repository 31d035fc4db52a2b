// Virtual Location against the host kernel: neighbour entries and bridge FDB entries made with
// `ip` and `bridge` in a throwaway namespace, read back by read_observation() and located.
#include "location/location.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include "kernel/netlink.hpp"
#include "kernel/snapshot.hpp"
#include "location/observe.hpp"
#include "model/site.hpp"
#include "support/netns.hpp"

namespace etherctl::location {
namespace {

using test::run;

// The bridge "vmotion" with a server-side port "servers" and a port "dcx" named like the
// site's tunnel (a veth stands in for the tunnel's bridge port).
const char* kSite = R"({
  "etherctl": 1,
  "devices": {"dc1": {
    "vlans": {"wan": {"interface": "wan0"}, "servers": {"interface": "servers"}},
    "vlan_groups": {"vmotion": {"members": ["servers", "dcx"]}},
    "self_ips": {
      "wan-self": {"address": "198.51.100.1/24", "vlan": "wan"},
      "server-self": {"address": "10.1.0.1/24", "vlan": "vmotion"},
      "server-v6": {"address": "2001:db8:1::1/64", "vlan": "vmotion"}
    }
  }, "dc2": {
    "vlans": {"wan": {"interface": "wan0"}},
    "self_ips": {"wan-self": {"address": "203.0.113.1/24", "vlan": "wan"}}
  }},
  "tunnels": {"dcx": {"profile": "etherip",
                      "endpoints": {"dc1": "198.51.100.1", "dc2": "203.0.113.1"}}}
})";

TEST(LocationKernel, NeighboursAndFdbLocateMembers) {
  require_feature("bridge");
  test::TestNetns netns;
  run("ip link add vmotion type bridge && ip link set vmotion up"
      " && ip link add servers type veth peer name servers-peer"
      " && ip link add dcx type veth peer name dcx-peer"
      " && ip link set servers master vmotion && ip link set dcx master vmotion"
      " && ip link set servers up && ip link set dcx up"
      " && ip link set servers-peer up && ip link set dcx-peer up");
  // The bridge's carrier comes from its ports, set asynchronously (linkwatch). A carrier loss
  // after the entries below exist flushes the non-permanent ones (neigh_carrier_down): let the
  // bridge be up first, or the STALE and REACHABLE entries can vanish mid-test (seen on 6.1).
  for (int i = 0;
       i < 250 && run("ip -o link show dev vmotion").find("state UP") == std::string::npos; ++i) {
    usleep(20'000);
  }
  run("ip addr add 10.1.0.1/24 dev vmotion && ip addr add 2001:db8:1::1/64 dev vmotion"
      " && bridge fdb add 02:00:00:00:00:21 dev servers master static"
      " && bridge fdb add 02:00:00:00:00:22 dev dcx master static"
      " && bridge fdb add 02:00:00:00:00:05 dev dcx master static"
      " && ip neigh add 10.1.0.21 lladdr 02:00:00:00:00:21 dev vmotion nud permanent"
      " && ip neigh add 10.1.0.22 lladdr 02:00:00:00:00:22 dev vmotion nud stale"
      " && ip neigh add 10.1.0.23 lladdr 02:00:00:00:00:23 dev vmotion nud reachable"
      " && ip neigh add 2001:db8:1::5 lladdr 02:00:00:00:00:05 dev vmotion nud permanent");

  kernel::Netlink netlink;
  kernel::Snapshot snapshot = kernel::Snapshot::read(netlink);
  const uint64_t writes = netlink.write_requests();
  Observation observation = read_observation(netlink, snapshot);
  EXPECT_EQ(netlink.write_requests(), writes);

  auto loaded = model::load_site(kSite);
  ASSERT_TRUE(loaded.site) << loaded.problems.at(0).message;
  const model::Device& device = loaded.site->devices.at("dc1");
  auto locate_member = [&](const char* address) {
    return locate(*loaded.site, device, *model::IpAddress::parse(address), observation);
  };

  MemberLocation local = locate_member("10.1.0.21");
  EXPECT_EQ(local.location, Location::Local) << local.reason;
  EXPECT_EQ(local.port, "servers");
  EXPECT_FALSE(local.resolve);

  MemberLocation remote = locate_member("10.1.0.22");
  EXPECT_EQ(remote.location, Location::Remote) << remote.reason;
  EXPECT_EQ(remote.port, "dcx");
  EXPECT_TRUE(remote.resolve);  // STALE

  MemberLocation unknown = locate_member("10.1.0.23");  // MAC not in the FDB
  EXPECT_EQ(unknown.location, Location::Unknown) << unknown.reason;
  EXPECT_EQ(unknown.mac, "02:00:00:00:00:23");

  MemberLocation v6 = locate_member("2001:db8:1::5");
  EXPECT_EQ(v6.location, Location::Remote) << v6.reason;

  MemberLocation missing = locate_member("10.1.0.99");
  EXPECT_EQ(missing.location, Location::Unknown);
  EXPECT_TRUE(missing.resolve);

  // An FDB entry that moves (the VM migrated back) moves the member.
  run("bridge fdb replace 02:00:00:00:00:22 dev servers master static");
  observation = read_observation(netlink, kernel::Snapshot::read(netlink));
  MemberLocation back = locate_member("10.1.0.22");
  EXPECT_EQ(back.location, Location::Local) << back.reason;
}

// A member with no neighbour entry gets one probed: a "VM" in a namespace of its own answers.
TEST(LocationKernel, ResolveNeighbourProbesMissingEntries) {
  require_feature("bridge");
  test::TestNetns netns;
  const std::string vm = netns.name() + "-vm";
  struct RemoveVm {
    std::string name;
    ~RemoveVm() { test::run_status("ip netns del " + name); }
  } remove_vm{vm};
  run("ip netns add " + vm + " && ip link add vmotion type bridge && ip link set vmotion up" +
      " && ip link add servers type veth peer name vm0 && ip link set servers master vmotion" +
      " && ip link set servers up && ip link set vm0 netns " + vm +
      " && ip addr add 10.1.0.1/24 dev vmotion && ip -n " + vm +
      " link set vm0 address 02:00:00:00:00:21 && ip -n " + vm + " link set vm0 up && ip -n " + vm +
      " addr add 10.1.0.21/24 dev vm0");
  kernel::Netlink netlink;
  kernel::Snapshot snapshot = kernel::Snapshot::read(netlink);
  const auto member = *model::IpAddress::parse("10.1.0.21");
  resolve_neighbour(netlink, snapshot, "vmotion", member);
  std::string mac;
  for (int i = 0; i < 100 && mac.empty(); ++i) {
    for (const auto& n : read_observation(netlink, snapshot).neighbours) {
      if (n.interface == "vmotion" && n.address == member) mac = n.mac;
    }
    if (mac.empty()) usleep(20'000);
  }
  EXPECT_EQ(mac, "02:00:00:00:00:21");
  EXPECT_THROW(resolve_neighbour(netlink, snapshot, "nonexistent", member), std::invalid_argument);
}

}  // namespace
}  // namespace etherctl::location
