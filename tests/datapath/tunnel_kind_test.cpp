// The "tunnel" kind against the kernel, in private network and mount namespaces: create,
// observe, modify, remove through KindOps, as the engine drives it.
#include "datapath/tunnel_kind.hpp"

#include <gtest/gtest.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>

#include <cstdlib>
#include <string>

#include "datapath/datapath.hpp"
#include "kernel/snapshot.hpp"

namespace etherctl::datapath {
namespace {

std::string sh_out(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[512];
  while (p && fgets(buf, sizeof(buf), p)) out += buf;
  if (p) ::pclose(p);
  return out;
}

const plan::Object* find(const plan::Objects& objects, const std::string& key) {
  for (const auto& o : objects)
    if (o.key == key) return &o;
  return nullptr;
}

class TunnelKindTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(::unshare(CLONE_NEWNET | CLONE_NEWNS), 0) << "needs root";
    ASSERT_EQ(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), 0);
    ASSERT_EQ(std::system("ip link set lo up && ip link add u0 type veth peer name u1 && "
                          "ip addr add 192.0.2.1/24 dev u0 && ip link set u0 up"),
              0);
  }
  plan::Objects observe() {
    kernel::Netlink netlink;
    return ops().observe(kernel::Snapshot::read(netlink), owner);
  }
  static const kernel::KindOps& ops() { return tunnel_kind_ops(); }
  kernel::Ownership owner{"dc1-edge"};
};

TEST_F(TunnelKindTest, CreateObserveModifyRemove) {
  plan::Object desired{plan::kTunnel,
                       "dcx",
                       "dcx",
                       "/tunnels/dcx",
                       {{"local", "192.0.2.1"},
                        {"remote", "192.0.2.2"},
                        {"accept_reversed", false},
                        {"underlay", {"u0"}},
                        {"up", true},
                        {"mtu", 1500}}};
  kernel::Netlink netlink;
  ops().create(netlink, desired, owner);

  auto objects = observe();
  const plan::Object* seen = find(objects, "dcx");
  ASSERT_NE(seen, nullptr);
  EXPECT_EQ(find(objects, "eip-dcx"), nullptr) << "the programs' end is part of the tunnel";
  EXPECT_TRUE(seen->owned);
  for (const char* attr : {"local", "remote", "accept_reversed", "underlay", "up", "mtu"})
    EXPECT_EQ(seen->attrs.at(attr), desired.attrs.at(attr)) << attr;
  EXPECT_NE(sh_out("tc filter show dev eip-dcx ingress").find("etherip_encap"), std::string::npos);
  EXPECT_NE(sh_out("tc filter show dev u0 ingress").find("etherip_decap"), std::string::npos);
  EXPECT_EQ(sh_out("cat /proc/sys/net/ipv4/conf/eip-dcx/accept_local"), "1\n");
  // The tunnel end sends nothing of its own into the tunnel: no IPv6, so no address either.
  EXPECT_EQ(sh_out("cat /proc/sys/net/ipv6/conf/dcx/disable_ipv6"), "1\n");
  EXPECT_EQ(sh_out("ip -6 addr show dev dcx"), "");
  EXPECT_EQ(sh_out("ethtool -k dcx | grep -E '^tcp-segmentation-offload|^tx-checksumming'"),
            "tx-checksumming: on\ntcp-segmentation-offload: off\n");

  plan::Object changed = desired;
  changed.attrs["remote"] = "192.0.2.9";
  changed.attrs["accept_reversed"] = true;
  changed.attrs["mtu"] = 1400;
  ops().modify(netlink, changed, *seen);
  objects = observe();
  seen = find(objects, "dcx");
  ASSERT_NE(seen, nullptr);
  EXPECT_EQ(seen->attrs.at("remote"), "192.0.2.9");
  EXPECT_EQ(seen->attrs.at("accept_reversed"), true);
  EXPECT_EQ(seen->attrs.at("mtu"), 1400);
  ASSERT_EQ(inspect().size(), 1u);

  ops().remove(netlink, *seen);
  EXPECT_EQ(find(observe(), "dcx"), nullptr);
  EXPECT_EQ(if_nametoindex("eip-dcx"), 0u);
  EXPECT_TRUE(inspect().empty());
  EXPECT_EQ(sh_out("tc filter show dev u0 ingress"), "");
  EXPECT_EQ(sh_out("tc qdisc show dev u0").find("clsact"), std::string::npos);
}

// The links' offloads, queues and sysctls (prepare_links), read back with ethtool and
// /proc/sys, not with the code that set them; drift is seen by observe and repaired by modify.
TEST_F(TunnelKindTest, LinkSettingsAreInPlaceAndDriftIsRepaired) {
  plan::Object desired{plan::kTunnel,
                       "lnk",
                       "lnk",
                       "/tunnels/lnk",
                       {{"local", "192.0.2.1"},
                        {"remote", "192.0.2.5"},
                        {"underlay", {"u0"}},
                        {"up", true},
                        {"attached", true},
                        {"link_settings", "ok"}}};
  kernel::Netlink netlink;
  ops().create(netlink, desired, owner);
  const std::string cpus = sh_out("nproc");
  auto offloads = [](const std::string& dev) {
    return sh_out("ethtool -k " + dev +
                  " | grep -E '^(tx-checksumming|tcp-segmentation-offload|"
                  "generic-segmentation-offload|generic-receive-offload):'");
  };
  auto current_queues = [](const std::string& dev) {
    // "Current hardware settings:" is followed by RX and TX.
    return sh_out("ethtool -l " + dev +
                  " | sed -n '/^Current/,$p' | grep -E '^(RX|TX):' | "
                  "tr -s '\t ' ' '");
  };
  // IPv4 outer over a veth underlay (generic checksum offload): partial checksums go through.
  EXPECT_EQ(offloads("lnk"),
            "tx-checksumming: on\ntcp-segmentation-offload: off\n"
            "generic-segmentation-offload: off\ngeneric-receive-offload: on\n");
  EXPECT_EQ(sh_out("ethtool -k eip-lnk | grep -E "
                   "'^(tcp-segmentation-offload|generic-segmentation-offload|"
                   "generic-receive-offload):'"),
            "tcp-segmentation-offload: off\ngeneric-segmentation-offload: off\n"
            "generic-receive-offload: off\n");
  const std::string n = cpus.substr(0, cpus.find('\n'));
  EXPECT_EQ(current_queues("lnk"), "RX: " + n + "\nTX: " + n + "\n");
  EXPECT_EQ(current_queues("eip-lnk"), "RX: " + n + "\nTX: " + n + "\n");
  auto objects = observe();
  const plan::Object* seen = find(objects, "lnk");
  ASSERT_NE(seen, nullptr);
  EXPECT_EQ(seen->attrs.at("link_settings"), "ok");

  // Behind etherctl's back: GRO off on the bridge port, TSO on the eip end (no NAPI then),
  // reverse-path filtering on eip (the outer packets would be dropped).
  ASSERT_EQ(std::system("ethtool -K lnk gro off tx off && ethtool -K eip-lnk tso on && "
                        "sysctl -qw net.ipv4.conf.eip-lnk.rp_filter=1 && "
                        "sysctl -qw net.ipv6.conf.lnk.disable_ipv6=0"),
            0);
  objects = observe();
  seen = find(objects, "lnk");
  ASSERT_NE(seen, nullptr);
  const std::string drift = seen->attrs.at("link_settings").get<std::string>();
  EXPECT_NE(drift.find("lnk: rx-gro is off"), std::string::npos) << drift;
  EXPECT_NE(drift.find("lnk: tx-checksum-ip-generic is off, the datapath needs it on"),
            std::string::npos)
      << drift;
  EXPECT_NE(drift.find("eip-lnk: tx-tcp-segmentation is on"), std::string::npos) << drift;
  EXPECT_NE(drift.find("net/ipv4/conf/eip-lnk/rp_filter is 1"), std::string::npos) << drift;
  EXPECT_NE(drift.find("net/ipv6/conf/lnk/disable_ipv6 is 0"), std::string::npos) << drift;
  ops().modify(netlink, desired, *seen);
  objects = observe();
  seen = find(objects, "lnk");
  ASSERT_NE(seen, nullptr);
  EXPECT_EQ(seen->attrs.at("link_settings"), "ok");
  EXPECT_NE(offloads("lnk").find("generic-receive-offload: on"), std::string::npos);
  EXPECT_NE(offloads("lnk").find("tx-checksumming: on"), std::string::npos);
  EXPECT_EQ(sh_out("cat /proc/sys/net/ipv4/conf/eip-lnk/rp_filter"), "0\n");
  EXPECT_EQ(sh_out("cat /proc/sys/net/ipv6/conf/lnk/disable_ipv6"), "1\n");

  // The settings live on the pair, which goes with the tunnel.
  ops().remove(netlink, *seen);
  EXPECT_EQ(if_nametoindex("lnk"), 0u);
  EXPECT_EQ(if_nametoindex("eip-lnk"), 0u);
}

// IPsec: the pair esp-<name> -> dec-<name> comes with ipsec_reqid (GRO on dec, no TSO on esp,
// the decap program on dec's ingress, both marked), is repaired when deleted behind etherctl's
// back, and goes when the tunnel loses IPsec or goes itself.
TEST_F(TunnelKindTest, IpsecPairComesAndGoesWithTheTunnelsIpsec) {
  plan::Object desired{plan::kTunnel,
                       "sec",
                       "sec",
                       "/tunnels/sec",
                       {{"local", "192.0.2.1"},
                        {"remote", "192.0.2.6"},
                        {"underlay", {"u0"}},
                        {"up", true},
                        {"attached", true},
                        {"link_settings", "ok"},
                        {"ipsec_reqid", 0x45000001}}};
  kernel::Netlink netlink;
  ops().create(netlink, desired, owner);
  auto objects = observe();
  const plan::Object* seen = find(objects, "sec");
  ASSERT_NE(seen, nullptr);
  EXPECT_EQ(find(objects, "esp-sec"), nullptr) << "the pair is part of the tunnel";
  EXPECT_EQ(find(objects, "dec-sec"), nullptr) << "the pair is part of the tunnel";
  EXPECT_EQ(seen->attrs.at("ipsec_reqid"), 0x45000001);
  EXPECT_EQ(seen->attrs.at("attached"), true);
  EXPECT_EQ(seen->attrs.at("link_settings"), "ok");
  EXPECT_NE(sh_out("tc filter show dev dec-sec ingress").find("etherip_decap"), std::string::npos);
  EXPECT_EQ(sh_out("ethtool -k dec-sec | grep -E '^generic-receive-offload:'"),
            "generic-receive-offload: on\n");
  EXPECT_EQ(sh_out("ethtool -k esp-sec | grep -E '^tcp-segmentation-offload:'"),
            "tcp-segmentation-offload: off\n");
  EXPECT_NE(sh_out("ip -o link show dec-sec").find("mtu 65535"), std::string::npos);
  EXPECT_NE(sh_out("ip -o link show esp-sec").find("alias etherctl:dc1-edge"), std::string::npos);
  EXPECT_EQ(sh_out("cat /proc/sys/net/ipv4/conf/dec-sec/rp_filter"), "0\n");
  // No partial checksums into IPsec: the bridge port keeps transmit checksum offload off.
  auto tx_checksum = [] { return sh_out("ethtool -k sec | grep -E '^tx-checksumming:'"); };
  EXPECT_EQ(tx_checksum(), "tx-checksumming: off\n");
  ASSERT_EQ(std::system("ethtool -K sec tx on"), 0);
  objects = observe();
  seen = find(objects, "sec");
  ASSERT_NE(seen, nullptr);
  EXPECT_NE(seen->attrs.at("link_settings")
                .get<std::string>()
                .find("sec: tx-checksum-ip-generic is on, the datapath needs it off"),
            std::string::npos)
      << seen->attrs.at("link_settings");
  ops().modify(netlink, desired, *seen);
  EXPECT_EQ(tx_checksum(), "tx-checksumming: off\n");

  // Deleted behind etherctl's back: observe sees it, modify makes it again.
  ASSERT_EQ(std::system("ip link del dec-sec"), 0);
  objects = observe();
  seen = find(objects, "sec");
  ASSERT_NE(seen, nullptr);
  EXPECT_NE(seen->attrs.at("link_settings"), "ok");
  ops().modify(netlink, desired, *seen);
  objects = observe();
  seen = find(objects, "sec");
  ASSERT_NE(seen, nullptr);
  EXPECT_EQ(seen->attrs.at("link_settings"), "ok");
  EXPECT_EQ(seen->attrs.at("attached"), true);

  // IPsec removed from the tunnel: the pair goes, clear EtherIP is the tunnel's again.
  plan::Object clear = desired;
  clear.attrs["ipsec_reqid"] = 0;
  ops().modify(netlink, clear, *seen);
  EXPECT_EQ(if_nametoindex("esp-sec"), 0u);
  EXPECT_EQ(if_nametoindex("dec-sec"), 0u);
  objects = observe();
  seen = find(objects, "sec");
  ASSERT_NE(seen, nullptr);
  EXPECT_EQ(seen->attrs.at("ipsec_reqid"), 0);
  EXPECT_EQ(seen->attrs.at("attached"), true);
  EXPECT_EQ(tx_checksum(), "tx-checksumming: on\n") << "IPv4 outer without IPsec";

  // Back on, then the tunnel goes: nothing of it stays.
  ops().modify(netlink, desired, *seen);
  EXPECT_NE(if_nametoindex("dec-sec"), 0u);
  EXPECT_EQ(tx_checksum(), "tx-checksumming: off\n");
  objects = observe();
  seen = find(objects, "sec");
  ASSERT_NE(seen, nullptr);
  ops().remove(netlink, *seen);
  for (const char* link : {"sec", "eip-sec", "esp-sec", "dec-sec"})
    EXPECT_EQ(if_nametoindex(link), 0u) << link;
  EXPECT_TRUE(inspect().empty());
}

TEST_F(TunnelKindTest, HundredApplyDestroyCyclesLeaveNothingBehind) {
  plan::Object desired{plan::kTunnel,
                       "cyc",
                       "cyc",
                       "/tunnels/cyc",
                       {{"local", "192.0.2.1"},
                        {"remote", "192.0.2.7"},
                        {"underlay", {"u0"}},
                        {"clamp_tcp_mss", true},
                        {"up", true}}};
  kernel::Netlink netlink;
  std::string pin_dir;
  for (int i = 0; i < 100; ++i) {
    ops().create(netlink, desired, owner);
    const plan::Object* seen = nullptr;
    auto objects = observe();
    seen = find(objects, "cyc");
    ASSERT_NE(seen, nullptr) << i;
    if (pin_dir.empty()) pin_dir = Datapath::open().pin_dir();
    ops().remove(netlink, *seen);
  }
  EXPECT_EQ(if_nametoindex("cyc"), 0u);
  EXPECT_EQ(if_nametoindex("eip-cyc"), 0u);
  EXPECT_TRUE(inspect().empty());
  EXPECT_EQ(sh_out("tc filter show dev u0 ingress"), "");
  EXPECT_EQ(sh_out("tc qdisc show dev u0").find("clsact"), std::string::npos);
  EXPECT_NE(sh_out("ls " + pin_dir + " 2>&1").find("No such file"), std::string::npos) << pin_dir;
}

TEST_F(TunnelKindTest, FailedCreateLeavesNothing) {
  plan::Object bad{plan::kTunnel,
                   "bad",
                   "bad",
                   "/tunnels/bad",
                   {{"local", "192.0.2.1"}, {"remote", "192.0.2.3"}, {"underlay", {"nosuch0"}}}};
  kernel::Netlink netlink;
  EXPECT_THROW(ops().create(netlink, bad, owner), kernel::KernelError);
  EXPECT_EQ(if_nametoindex("bad"), 0u);
  EXPECT_EQ(if_nametoindex("eip-bad"), 0u);
}

}  // namespace
}  // namespace etherctl::datapath
