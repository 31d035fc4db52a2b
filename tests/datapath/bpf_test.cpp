// BPF_PROG_TEST_RUN tests of the EtherIP programs on crafted packets: verdicts, output bytes
// and counters. The process moves into private network and mount namespaces first, so the
// interfaces it creates and the bpffs it mounts vanish with it.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "datapath/bpf/etherip_common.h"
#include "datapath/datapath.hpp"
#include "datapath/host.hpp"
#include "packets.hpp"
#include "test_run.hpp"

namespace etherctl::datapath::test {
namespace {

constexpr uint32_t kUnspec = static_cast<uint32_t>(TC_ACT_UNSPEC);

// Decapsulated frames shorter than the Ethernet minimum arrive zero-padded, as from a NIC.
Bytes padded(Bytes frame) {
  if (frame.size() < 60) frame.resize(60, 0);
  return frame;
}

// Inside the stock-kernel VM (tests/vm): one vCPU, TCG, several times slower.
bool in_vm() { return std::getenv("ETHERCTL_IN_VM") != nullptr; }

void sh(const std::string& cmd) { ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd; }

struct Result {
  uint32_t verdict = 0;
  Bytes out;
  __sk_buff ctx{};
};

class DatapathTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(::unshare(CLONE_NEWNET | CLONE_NEWNS), 0) << "needs root";
    ASSERT_EQ(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), 0);
    sh("ip link set lo up");
    sh("ip link add u0 type veth peer name u1");
    sh("ip addr add 192.0.2.1/24 dev u0 && ip addr add 198.51.100.1/24 dev u0");
    sh("ip addr add 2001:db8::1/64 dev u0 nodad");
    sh("ip link set u0 up && ip link set u1 up");
    sh("ip route add 203.0.113.0/24 via 192.0.2.254");
    // A router: transit EtherIP must pass (with forwarding off it could only be dropped).
    sh("sysctl -qw net.ipv4.conf.u0.forwarding=1");
    for (const char* t : {"dcx", "dcx6", "rev", "mss", "jumbo6"}) {
      sh(std::string("ip link add ") + t + " type veth peer name eip-" + t);
      // No IPv6 chatter (RS, MLD) from the bridge-port end: it would run through the attached
      // encap program and disturb the exact counter checks.
      sh(std::string("sysctl -qw net.ipv6.conf.") + t + ".disable_ipv6=1");
      sh(std::string("ip link set ") + t + " up && ip link set eip-" + t + " up");
    }
    Options options;
    options.bpffs = "/tmp/ectest-bpffs-" + std::to_string(::getpid());
    dp_ = std::make_unique<Datapath>(Datapath::open(options));
    dp_->apply({"dcx", "192.0.2.1", "192.0.2.2", {"u0"}, false});
    dp_->apply({"dcx6", "2001:db8::1", "2001:db8::2", {"u0"}, false});
    dp_->apply({"rev", "192.0.2.1", "192.0.2.3", {"u0"}, true});
    // A jumbo tunnel over a 1280-byte IPv6 path to a peer that answers no neighbour solicitation:
    // its outer fragments leave through u0 and are captured on u1. The route's MTU is locked:
    // bpf_fib_lookup (ip6_mtu_from_fib6) and IPv6 forwarding both ignore an unlocked route MTU
    // and use the device's.
    sh("ip link set jumbo6 mtu 9000 && ip link set eip-jumbo6 mtu 9000");
    sh("ip -6 route add 2001:db8::5/128 dev u0 mtu lock 1280");
    sh("ip -6 neigh add 2001:db8::5 lladdr 02:aa:00:00:00:05 dev u0 nud permanent");
    dp_->apply({"jumbo6", "2001:db8::1", "2001:db8::5", {"u0"}, false});
    TunnelSpec mss{"mss", "192.0.2.1", "192.0.2.4", {"u0"}};
    mss.clamp_tcp_mss = true;
    dp_->apply(mss);
    // An IPsec tunnel and its ESP pair (the decryption itself needs ESP: tests/e2e/test_ipsec.py
    // in the stock-kernel VM).
    sh("ip link add sec type veth peer name eip-sec");
    sh("ip link add esp-sec mtu 65535 type veth peer name dec-sec mtu 65535");
    sh("sysctl -qw net.ipv6.conf.sec.disable_ipv6=1");
    sh("ip link set sec up && ip link set eip-sec up && ip link set esp-sec up && "
       "ip link set dec-sec up");
    TunnelSpec sec{"sec", "192.0.2.1", "192.0.2.6", {"u0"}};
    sec.ipsec_reqid = kSecReqid;
    sec.clamp_tcp_mss = true;
    sec.esp_headroom = kSecEspHeadroom;
    dp_->apply(sec);
  }
  static void TearDownTestSuite() {
    if (dp_) dp_->remove_all();
    dp_.reset();
  }

  static Result run(int prog, const Bytes& in, int ifindex, uint32_t mark = 0,
                    uint32_t gso_size = 0) {
    Result r;
    r.out.resize(std::max<size_t>(in.size() + 4096, ETHERIP_ESP_MAX + 64));  // reassembled
    TestRun t = test_run(prog, in, ifindex, r.out, mark, gso_size);
    EXPECT_EQ(t.error, 0) << "BPF_PROG_TEST_RUN failed: " << t.error;
    r.verdict = t.verdict;
    r.ctx = t.ctx;
    r.out.resize(t.out_len);
    return r;
  }
  static Result encap(const Bytes& frame, const std::string& tunnel, uint32_t mark = 0,
                      uint32_t gso_size = 0) {
    return run(dp_->encap_fd(), frame, index(eip_name(tunnel)), mark, gso_size);
  }
  static Result decap(const Bytes& packet) { return run(dp_->decap_fd(), packet, index("u0")); }

  static int index(const std::string& name) {
    return static_cast<int>(if_nametoindex(name.c_str()));
  }
  static Counters counters(const std::string& tunnel) { return dp_->counters(tunnel).value(); }

  // Outer frame as it arrives on the underlay.
  static Bytes outer4(const char* src, const char* dst, const Bytes& payload, uint16_t id = 1,
                      uint16_t frag = 0) {
    Bytes b = ether(kUnderlayMac, kPeerMac, 0x0800);
    append(b, ipv4(src, dst, ETHERIP_IPPROTO, payload, id, frag));
    return b;
  }
  static Bytes outer6(const char* src, const char* dst, const Bytes& payload,
                      uint8_t next = ETHERIP_IPPROTO) {
    Bytes b = ether(kUnderlayMac, kPeerMac, 0x86dd);
    append(b, ipv6(src, dst, next, payload));
    return b;
  }

  static constexpr uint32_t kSecReqid = 0x45000001;
  static constexpr uint16_t kSecEspHeadroom = 37;
  static constexpr Mac kUnderlayMac = {0x02, 0xaa, 0, 0, 0, 1};
  static constexpr Mac kPeerMac = {0x02, 0xaa, 0, 0, 0, 2};
  static inline std::unique_ptr<Datapath> dp_;
};

// ------------------------------------------------------------------------------ encapsulation

TEST_F(DatapathTest, EncapIpv4WrapsArpAndRedirectsIntoOwnIngress) {
  Mac bcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, vm = {0x02, 0, 0, 0, 0, 1};
  Bytes arp = ether(bcast, vm, 0x0806, 42, 0x11);
  auto before = counters("dcx");
  auto r = encap(arp, "dcx");
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  ASSERT_EQ(r.out.size(), 14 + 20 + 2 + arp.size());
  auto mac = hardware_address("eip-dcx");
  EXPECT_TRUE(std::equal(mac.begin(), mac.end(), r.out.begin())) << "outer dst = eip's own MAC";
  EXPECT_EQ(r.out[12], 0x08);
  EXPECT_EQ(r.out[13], 0x00);
  const uint8_t* ip = r.out.data() + 14;
  EXPECT_EQ(ip[0], 0x45);
  EXPECT_EQ((ip[2] << 8) | ip[3], 20 + 2 + 42);
  EXPECT_EQ(ip[6] & 0x40, 0) << "DF must be clear";
  EXPECT_EQ(ip[8], 64);
  EXPECT_EQ(ip[9], ETHERIP_IPPROTO);
  EXPECT_EQ(checksum(ip, 20), 0) << "header checksum";
  EXPECT_EQ(Bytes(ip + 12, ip + 16), Bytes({192, 0, 2, 1}));
  EXPECT_EQ(Bytes(ip + 16, ip + 20), Bytes({192, 0, 2, 2}));
  EXPECT_EQ(r.out[34], 0x30);
  EXPECT_EQ(r.out[35], 0x00);
  EXPECT_EQ(Bytes(r.out.begin() + 36, r.out.end()), arp);
  EXPECT_EQ(r.ctx.mark, ETHERIP_MARK);
  auto after = counters("dcx");
  EXPECT_EQ(after.tx_packets - before.tx_packets, 1u);
  EXPECT_EQ(after.tx_bytes - before.tx_bytes, 42u);

  // Every packet gets its own IPv4 identification (fragments of two datagrams never mix).
  auto r2 = encap(arp, "dcx");
  EXPECT_NE((r2.out[18] << 8) | r2.out[19], (r.out[18] << 8) | r.out[19]);
}

TEST_F(DatapathTest, EncapPassesItsOwnReinjectedPacketAndClearsTheMark) {
  Bytes pkt = outer4("192.0.2.1", "192.0.2.2", etherip(inner_frame(60)));
  auto r = encap(pkt, "dcx", ETHERIP_MARK);
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(r.out, pkt);
  EXPECT_EQ(r.ctx.mark, 0u);
}

TEST_F(DatapathTest, EncapIpv6) {
  Bytes frame = inner_frame(1400);
  auto r = encap(frame, "dcx6");
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_OK)) << "an IP frame goes on to the stack";
  ASSERT_EQ(r.out.size(), 14 + 40 + 2 + frame.size());
  EXPECT_EQ(r.out[12], 0x86);
  EXPECT_EQ(r.out[13], 0xdd);
  const uint8_t* ip = r.out.data() + 14;
  EXPECT_EQ(ip[0] >> 4, 6);
  EXPECT_EQ((ip[4] << 8) | ip[5], 2 + 1400);
  EXPECT_EQ(ip[6], ETHERIP_IPPROTO);
  auto local = ip6("2001:db8::1"), remote = ip6("2001:db8::2");
  EXPECT_TRUE(std::equal(local.begin(), local.end(), ip + 8));
  EXPECT_TRUE(std::equal(remote.begin(), remote.end(), ip + 24));
  EXPECT_EQ(r.out[54], 0x30);
  EXPECT_EQ(Bytes(r.out.begin() + 56, r.out.end()), frame);
}

// IP frames leave the program as the outer packet, headers set for the stack, in the same pass
// (TC_ACT_OK): no second trip through eip's ingress, no mark left behind (one that came with the
// frame is cleared, as on the re-injected path). Every family pair gives the same bytes as the
// re-injected path would: outer Ethernet + IP + 0x3000 + the frame as it was.
TEST_F(DatapathTest, EncapIpFramesGoOnToTheStackInTheSamePass) {
  struct Case {
    const char* tunnel;
    uint16_t inner_type;
    size_t outer_ip;  // outer IP header bytes
  };
  for (const Case& c : {Case{"dcx", 0x0800, 20}, Case{"dcx", 0x86dd, 20}, Case{"dcx6", 0x0800, 40},
                        Case{"dcx6", 0x86dd, 40}}) {
    for (size_t size : {60u, 1000u, 1514u}) {
      SCOPED_TRACE(std::string(c.tunnel) + " inner type " + std::to_string(c.inner_type) +
                   " size " + std::to_string(size));
      Bytes frame = inner_frame(size, c.inner_type, static_cast<uint8_t>(size));
      auto before = counters(c.tunnel);
      auto r = encap(frame, c.tunnel, 0x1234);
      if (c.outer_ip == 40 && size == 1514) {
        // Beyond the 1500-byte route: the IPv6 send path cuts fragments (tests below).
        EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
        continue;
      }
      ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_OK));
      EXPECT_EQ(r.ctx.mark, 0u);
      ASSERT_EQ(r.out.size(), 14 + c.outer_ip + 2 + frame.size());
      auto mac = hardware_address(eip_name(c.tunnel));
      EXPECT_TRUE(std::equal(mac.begin(), mac.end(), r.out.begin())) << "outer dst = eip's MAC";
      EXPECT_EQ((r.out[12] << 8) | r.out[13], c.outer_ip == 20 ? 0x0800 : 0x86dd);
      const uint8_t* ip = r.out.data() + 14;
      if (c.outer_ip == 20) {
        EXPECT_EQ(ip[0], 0x45);
        EXPECT_EQ((ip[2] << 8) | ip[3], 20 + 2 + size);
        EXPECT_EQ(ip[9], ETHERIP_IPPROTO);
        EXPECT_EQ(checksum(ip, 20), 0) << "header checksum";
      } else {
        EXPECT_EQ(ip[0] >> 4, 6);
        EXPECT_EQ((ip[4] << 8) | ip[5], 2 + size);
        EXPECT_EQ(ip[6], ETHERIP_IPPROTO);
      }
      EXPECT_EQ(r.out[14 + c.outer_ip], 0x30);
      EXPECT_EQ(r.out[14 + c.outer_ip + 1], 0x00);
      EXPECT_EQ(Bytes(r.out.begin() + 16 + static_cast<long>(c.outer_ip), r.out.end()), frame);
      auto after = counters(c.tunnel);
      EXPECT_EQ(after.tx_packets - before.tx_packets, 1u);
      EXPECT_EQ(after.tx_bytes - before.tx_bytes, size);
    }
  }
}

TEST_F(DatapathTest, EncapIpv6FragmentsWhatExceedsTheRouteMtu) {
  // 1514 + 2 bytes do not fit 1500 - 40: the first fragment (1448 bytes, a clone) went into the
  // stack; the program's own output is the second one.
  Bytes frame = inner_frame(1514);
  auto before = counters("dcx6");
  auto r = encap(frame, "dcx6");
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  Bytes payload = etherip(frame);
  const size_t first = (1500 - 40 - 8) & ~7u;
  ASSERT_EQ(r.out.size(), 14 + 40 + 8 + payload.size() - first);
  const uint8_t* ip = r.out.data() + 14;
  EXPECT_EQ(ip[6], 44) << "fragment header";
  EXPECT_EQ((ip[4] << 8) | ip[5], 8 + payload.size() - first);
  const uint8_t* fh = ip + 40;
  EXPECT_EQ(fh[0], ETHERIP_IPPROTO);
  EXPECT_EQ((fh[2] << 8) | fh[3], first) << "offset 1448, no more fragments";
  EXPECT_EQ(Bytes(r.out.begin() + 62, r.out.end()), Bytes(payload.begin() + first, payload.end()));
  EXPECT_EQ(r.ctx.mark, ETHERIP_MARK);
  EXPECT_EQ(counters("dcx6").tx_packets - before.tx_packets, 1u);
}

// A packet socket on an interface, for frames that really left through the stack.
class PacketCapture {
 public:
  explicit PacketCapture(const char* ifname) {
    fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    sockaddr_ll where{};
    where.sll_family = AF_PACKET;
    where.sll_protocol = htons(ETH_P_ALL);
    where.sll_ifindex = static_cast<int>(if_nametoindex(ifname));
    int rcvbuf = 64 << 20;
    if (fd_ >= 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
      if (::bind(fd_, reinterpret_cast<sockaddr*>(&where), sizeof(where)) != 0) {
        ::close(fd_);
        fd_ = -1;
      }
    }
  }
  ~PacketCapture() {
    if (fd_ >= 0) ::close(fd_);
  }
  PacketCapture(const PacketCapture&) = delete;
  PacketCapture& operator=(const PacketCapture&) = delete;
  bool ok() const { return fd_ >= 0; }
  // Frames for which keep() holds, until `count` of them or the deadline.
  template <typename Keep>
  std::vector<Bytes> collect(size_t count, std::chrono::milliseconds within, Keep keep) {
    std::vector<Bytes> out;
    Bytes buf(65536);
    auto deadline = std::chrono::steady_clock::now() + within;
    while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ssize_t n = ::recv(fd_, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n <= 0) continue;
      Bytes frame(buf.begin(), buf.begin() + n);
      if (keep(frame)) out.push_back(std::move(frame));
    }
    return out;
  }

 private:
  int fd_ = -1;
};

// An IPv6 fragment of EtherIP to `dst` (fixed header, then the fragment header).
bool is_frag6_to(const Bytes& f, const char* dst) {
  auto a = ip6(dst);
  return f.size() >= 62 && f[12] == 0x86 && f[13] == 0xdd && f[20] == 44 && f[54] == 97 &&
         std::equal(a.begin(), a.end(), f.begin() + 38);
}

struct Frag6 {
  uint32_t offset, length, id;
  bool more;
};
Frag6 frag6_of(const Bytes& f) {
  uint16_t fo = static_cast<uint16_t>((f[56] << 8) | f[57]);
  uint32_t id = (uint32_t{f[58]} << 24) | (f[59] << 16) | (f[60] << 8) | f[61];
  uint32_t payload = static_cast<uint32_t>((f[18] << 8) | f[19]);
  return {static_cast<uint32_t>(fo & ~7u), payload - 8, id, (fo & 1) != 0};
}

// The outer fragments of one datagram, in any order: they must tile [0, total) in pieces of at
// most `mtu` bytes on the wire (IPv6 header included), all but the last with M set.
void check_fragments6(std::vector<Bytes> frags, size_t total, size_t mtu, size_t count) {
  ASSERT_EQ(frags.size(), count);
  std::sort(frags.begin(), frags.end(),
            [](const Bytes& a, const Bytes& b) { return frag6_of(a).offset < frag6_of(b).offset; });
  uint32_t at = 0, id = frag6_of(frags[0]).id;
  for (size_t i = 0; i < frags.size(); ++i) {
    Frag6 f = frag6_of(frags[i]);
    EXPECT_EQ(f.offset, at) << i;
    EXPECT_EQ(f.id, id) << i;
    EXPECT_EQ(f.more, i + 1 < frags.size()) << i;
    EXPECT_LE(40 + 8 + f.length, mtu) << i;
    EXPECT_EQ(frags[i].size(), 14 + 40 + 8 + f.length) << i;
    if (f.more) {
      EXPECT_EQ(f.length % 8, 0u) << i;
    }
    at += f.length;
  }
  EXPECT_EQ(at, total);
}

// The fragments as if the peer had sent them to us (IPv6 has no header checksum to fix).
std::vector<Bytes> reversed6(std::vector<Bytes> frags) {
  for (auto& f : frags) std::swap_ranges(f.begin() + 22, f.begin() + 38, f.begin() + 38);
  return frags;
}

TEST_F(DatapathTest, EncapIpv6CutsAsManyFragmentsAsTheRouteMtuNeeds) {
  // 3000 + 2 bytes on a 1280-byte path: pieces of 1232, 1232 and 538 bytes. The first two (the
  // clones) went through the stack out of u0; the program's own output is the third.
  PacketCapture wire("u1");
  ASSERT_TRUE(wire.ok());
  Bytes frame = inner_frame(3000, 0x0800, 3);
  auto before = counters("jumbo6");
  auto r = encap(frame, "jumbo6");
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  EXPECT_EQ(r.ctx.mark, ETHERIP_MARK);
  ASSERT_TRUE(is_frag6_to(r.out, "2001:db8::5"));
  auto frags = wire.collect(2, std::chrono::seconds(5),
                            [](const Bytes& f) { return is_frag6_to(f, "2001:db8::5"); });
  frags.push_back(r.out);
  check_fragments6(frags, 3002, 1280, 3);
  auto after = counters("jumbo6");
  EXPECT_EQ(after.tx_packets - before.tx_packets, 1u);
  EXPECT_EQ(after.tx_bytes - before.tx_bytes, 3000u);
  EXPECT_EQ(after.total_drops(), before.total_drops());
  // Back through decap, last piece first: the frame again.
  auto back = reversed6(frags);
  EXPECT_EQ(decap(back[2]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  EXPECT_EQ(decap(back[0]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  auto d = decap(back[1]);
  ASSERT_EQ(d.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  EXPECT_EQ(d.out, frame);
}

TEST_F(DatapathTest, JumboFrameLeavesAsEightIpv6FragmentsAndComesBackWhole) {
  // A 9014-byte frame (9000-byte MTU) really sent into the tunnel's bridge port: the encap
  // program cuts 9016 bytes into 8 fragments for the 1280-byte path (7 clones, then itself),
  // the stack forwards them out of u0. BPF_PROG_TEST_RUN cannot take a frame this big.
  PacketCapture wire("u1");
  ASSERT_TRUE(wire.ok());
  Bytes frame = inner_frame(9014, 0x0800, 8);
  auto before = counters("jumbo6");
  int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = index("jumbo6");
  to.sll_halen = 6;
  ssize_t sent =
      ::sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  ::close(fd);
  ASSERT_EQ(sent, static_cast<ssize_t>(frame.size())) << std::strerror(errno);
  auto ours = [](const Bytes& f) { return is_frag6_to(f, "2001:db8::5"); };
  auto frags = wire.collect(8, std::chrono::seconds(in_vm() ? 20 : 5), ours);
  auto extra = wire.collect(1, std::chrono::milliseconds(300), ours);
  frags.insert(frags.end(), extra.begin(), extra.end());
  check_fragments6(frags, 9016, 1280, 8);
  auto after = counters("jumbo6");
  EXPECT_EQ(after.tx_packets - before.tx_packets, 1u);
  EXPECT_EQ(after.total_drops(), before.total_drops());
  // And back: our own decap program puts them together (in the order they arrived, reversed).
  auto back = reversed6(frags);
  std::reverse(back.begin(), back.end());
  auto rx_before = counters("jumbo6");
  Result last;
  for (const auto& f : back) last = decap(f);
  ASSERT_EQ(last.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  EXPECT_EQ(last.out, frame);
  auto rx_after = counters("jumbo6");
  EXPECT_EQ(rx_after.reassembled - rx_before.reassembled, 1u);
  EXPECT_EQ(rx_after.rx_fragments - rx_before.rx_fragments, 8u);
}

TEST_F(DatapathTest, EncapDropsGsoPackets) {
  auto before = counters("dcx");
  auto r = encap(inner_frame(1514), "dcx", 0, 1448);
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx").drop(Drop::kGso) - before.drop(Drop::kGso), 1u);
}

TEST_F(DatapathTest, EncapWithoutConfigurationDrops) {
  auto before = dp_->unattributed();
  auto r = run(dp_->encap_fd(), inner_frame(60), index("u1"));
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(dp_->unattributed().drop(Drop::kNoTunnel) - before.drop(Drop::kNoTunnel), 1u);
}

// A TCP segment (IPv4) with the given flags and options, checksummed.
Bytes tcp4_frame(uint8_t flags, const Bytes& options) {
  Bytes tcp;
  put16(tcp, 40000);
  put16(tcp, 80);
  for (int i = 0; i < 8; ++i) tcp.push_back(static_cast<uint8_t>(i));  // seq, ack
  tcp.push_back(static_cast<uint8_t>(((20 + options.size()) / 4) << 4));
  tcp.push_back(flags);
  put16(tcp, 65535);
  put16(tcp, 0);  // checksum
  put16(tcp, 0);
  append(tcp, options);
  Bytes pseudo = {10, 0, 0, 1, 10, 0, 0, 2, 0, 6};
  put16(pseudo, static_cast<uint16_t>(tcp.size()));
  append(pseudo, tcp);
  uint16_t c = checksum(pseudo.data(), pseudo.size());
  tcp[16] = static_cast<uint8_t>(c >> 8);
  tcp[17] = static_cast<uint8_t>(c);
  Bytes frame = ether({0x02, 0, 0, 0, 0, 2}, {0x02, 0, 0, 0, 0, 1}, 0x0800);
  append(frame, ipv4("10.0.0.1", "10.0.0.2", 6, tcp));
  return frame;
}

bool tcp4_checksum_ok(const Bytes& frame) {
  Bytes tcp(frame.begin() + 34, frame.end());
  Bytes pseudo = {10, 0, 0, 1, 10, 0, 0, 2, 0, 6};
  put16(pseudo, static_cast<uint16_t>(tcp.size()));
  append(pseudo, tcp);
  return checksum(pseudo.data(), pseudo.size()) == 0;
}

TEST_F(DatapathTest, EncapClampsMssOfSyns) {
  // NOP, NOP, SACK permitted, MSS 1460, window scale 7, NOP.
  Bytes options = {1, 1, 4, 2, 2, 4, 0x05, 0xb4, 3, 3, 7, 1};
  auto r = encap(tcp4_frame(0x02, options), "mss");
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_OK));
  Bytes inner(r.out.begin() + 36, r.out.end());
  // 1500 (u0) - 20 outer IPv4 - 2 EtherIP - 14 Ethernet - 20 IPv4 - 20 TCP = 1424
  EXPECT_EQ((inner[34 + 20 + 6] << 8) | inner[34 + 20 + 7], 1424);
  EXPECT_TRUE(tcp4_checksum_ok(inner));
  // SYN-ACK too.
  r = encap(tcp4_frame(0x12, options), "mss");
  inner.assign(r.out.begin() + 36, r.out.end());
  EXPECT_EQ((inner[34 + 20 + 6] << 8) | inner[34 + 20 + 7], 1424);
  EXPECT_TRUE(tcp4_checksum_ok(inner));
  // IPsec: the clamp keeps the ESP overhead free as well (model::esp_overhead: 37 bytes for
  // AES-GCM-16 in transport mode), so that full segments fit the WAN after encryption.
  r = encap(tcp4_frame(0x02, options), "sec");
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_OK));
  inner.assign(r.out.begin() + 36, r.out.end());
  EXPECT_EQ((inner[34 + 20 + 6] << 8) | inner[34 + 20 + 7], 1424 - kSecEspHeadroom);
  EXPECT_TRUE(tcp4_checksum_ok(inner));
  // Small MSS, non-SYN segments and tunnels without the option stay as they are.
  Bytes small = {2, 4, 0x03, 0xe8};
  for (auto [frame, tunnel] :
       {std::pair{tcp4_frame(0x02, small), "mss"}, std::pair{tcp4_frame(0x10, options), "mss"},
        std::pair{tcp4_frame(0x02, options), "dcx"}}) {
    r = encap(frame, tunnel);
    EXPECT_EQ(Bytes(r.out.begin() + 36, r.out.end()), frame);
  }
}

// ------------------------------------------------------------------------------ decapsulation

TEST_F(DatapathTest, DecapIpv4DeliversInnerFrame) {
  for (size_t size : {42u, 60u, 1000u, 1514u, 1518u}) {
    Bytes frame = inner_frame(size, size == 1518 ? 0x8100 : 0x0800);
    auto before = counters("dcx");
    auto r = decap(outer4("192.0.2.2", "192.0.2.1", etherip(frame)));
    ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT)) << size;
    EXPECT_EQ(r.out, padded(frame)) << size;
    auto after = counters("dcx");
    EXPECT_EQ(after.rx_packets - before.rx_packets, 1u);
    EXPECT_EQ(after.rx_bytes - before.rx_bytes, size);
  }
}

TEST_F(DatapathTest, DecapStripsEthernetPadding) {
  Bytes frame = inner_frame(14);  // header only: the outer packet is padded to 60 bytes
  Bytes pkt = outer4("192.0.2.2", "192.0.2.1", etherip(frame));
  pkt.resize(60, 0xee);  // padding bytes need not be zero on the wire
  auto r = decap(pkt);
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  EXPECT_EQ(r.out, padded(frame));
  Bytes big = inner_frame(200);
  pkt = outer4("192.0.2.2", "192.0.2.1", etherip(big));
  pkt.resize(pkt.size() + 8, 0xee);
  r = decap(pkt);
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  EXPECT_EQ(r.out, big);
}

TEST_F(DatapathTest, DecapIpv6DeliversInnerFrame) {
  for (size_t size : {42u, 60u, 1514u}) {  // short frames take the copy path
    Bytes frame = inner_frame(size, size == 42 ? 0x0806 : 0x86dd);
    auto r = decap(outer6("2001:db8::2", "2001:db8::1", etherip(frame)));
    ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT)) << size;
    EXPECT_EQ(r.out, padded(frame)) << size;
  }
}

TEST_F(DatapathTest, NonEtheripPassesUntouched) {
  Bytes udp = ether(kUnderlayMac, kPeerMac, 0x0800);
  append(udp, ipv4("192.0.2.2", "192.0.2.1", 17, Bytes(30, 0x55)));
  Bytes udp6 = outer6("2001:db8::2", "2001:db8::1", Bytes(30, 0x55), 17);
  Bytes arp = ether(kUnderlayMac, kPeerMac, 0x0806, 42, 0x22);
  for (const Bytes& pkt : {udp, udp6, arp}) {
    auto r = decap(pkt);
    EXPECT_EQ(r.verdict, kUnspec);
    EXPECT_EQ(r.out, pkt);
  }
}

TEST_F(DatapathTest, TransitEtheripPasses) {
  Bytes pkt = outer4("192.0.2.2", "203.0.113.9", etherip(inner_frame(60)));
  auto r = decap(pkt);
  EXPECT_EQ(r.verdict, kUnspec);
  EXPECT_EQ(r.out, pkt);
}

TEST_F(DatapathTest, UnknownPeerIsDroppedAndCounted) {
  auto before = counters("dcx");
  auto r = decap(outer4("192.0.2.99", "192.0.2.1", etherip(inner_frame(60))));
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx").drop(Drop::kUnknownPeer) - before.drop(Drop::kUnknownPeer), 1u);
  EXPECT_EQ(counters("dcx").rx_packets, before.rx_packets);

  auto before6 = counters("dcx6");
  r = decap(outer6("2001:db8::99", "2001:db8::1", etherip(inner_frame(60))));
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx6").drop(Drop::kUnknownPeer) - before6.drop(Drop::kUnknownPeer), 1u);
}

TEST_F(DatapathTest, OtherLocalAddressIsDroppedAndCounted) {
  auto before = dp_->unattributed();
  auto r = decap(outer4("192.0.2.2", "198.51.100.1", etherip(inner_frame(60))));
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(dp_->unattributed().drop(Drop::kWrongLocal) - before.drop(Drop::kWrongLocal), 1u);
}

TEST_F(DatapathTest, WrongVersionIsDropped) {
  for (uint16_t header : {0x4000, 0x3001, 0x0000, 0xffff, 0x0301}) {
    auto before = counters("dcx");
    auto r = decap(outer4("192.0.2.2", "192.0.2.1", etherip(inner_frame(60), header)));
    EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT)) << header;
    EXPECT_EQ(counters("dcx").drop(Drop::kBadVersion) - before.drop(Drop::kBadVersion), 1u);
  }
}

TEST_F(DatapathTest, ReversedHeaderNeedsOptIn) {
  Bytes frame = inner_frame(100);
  auto before = counters("dcx");
  auto r = decap(outer4("192.0.2.2", "192.0.2.1", etherip(frame, 0x0300)));
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx").drop(Drop::kReversed) - before.drop(Drop::kReversed), 1u);

  r = decap(outer4("192.0.2.3", "192.0.2.1", etherip(frame, 0x0300)));  // tunnel "rev" opts in
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  EXPECT_EQ(r.out, frame);
}

TEST_F(DatapathTest, MalformedIsDroppedAndCounted) {
  auto check = [&](const Bytes& pkt, Drop reason, const char* what) {
    auto before = counters("dcx");
    auto r = decap(pkt);
    EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT)) << what;
    EXPECT_EQ(counters("dcx").drop(reason) - before.drop(reason), 1u) << what;
  };
  // IPv4 total length beyond the packet.
  Bytes longer = outer4("192.0.2.2", "192.0.2.1", etherip(inner_frame(100)));
  longer.resize(longer.size() - 10);
  check(longer, Drop::kTruncated, "tot_len past end");
  // EtherIP header without a whole inner Ethernet header.
  check(outer4("192.0.2.2", "192.0.2.1", Bytes{0x30, 0x00, 1, 2, 3}), Drop::kTruncated,
        "inner shorter than Ethernet");
  check(outer4("192.0.2.2", "192.0.2.1", Bytes{0x30}), Drop::kTruncated, "half a header");
  // Bad header checksum.
  Bytes bad = outer4("192.0.2.2", "192.0.2.1", etherip(inner_frame(60)));
  bad[14 + 10] ^= 0x01;
  check(bad, Drop::kBadIpHeader, "checksum");
  // IHL below 5.
  Bytes ihl = outer4("192.0.2.2", "192.0.2.1", etherip(inner_frame(60)));
  ihl[14] = 0x44;
  check(ihl, Drop::kBadIpHeader, "ihl");
  // IPv6 payload length past the end.
  auto before6 = counters("dcx6");
  Bytes v6 = outer6("2001:db8::2", "2001:db8::1", etherip(inner_frame(100)));
  v6.resize(v6.size() - 20);
  EXPECT_EQ(decap(v6).verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx6").drop(Drop::kTruncated) - before6.drop(Drop::kTruncated), 1u);
}

// ------------------------------------------------------------------------------ reassembly

// Splits an EtherIP (or `proto`) payload into IPv4 fragments at the given payload offsets.
std::vector<Bytes> fragments4(const Bytes& payload, std::vector<size_t> cuts, uint16_t id,
                              const char* src = "192.0.2.2", uint8_t proto = ETHERIP_IPPROTO) {
  std::vector<Bytes> out;
  cuts.push_back(payload.size());
  size_t start = 0;
  for (size_t i = 0; i < cuts.size(); ++i) {
    bool more = i + 1 < cuts.size();
    Bytes piece(payload.begin() + start, payload.begin() + cuts[i]);
    uint16_t field = static_cast<uint16_t>((more ? 0x2000 : 0) | (start / 8));
    Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, 0x0800);
    append(b, ipv4(src, "192.0.2.1", proto, piece, id, field));
    out.push_back(b);
    start = cuts[i];
  }
  return out;
}

TEST_F(DatapathTest, ReassemblesTwoFragmentsInEitherOrder) {
  Bytes frame = inner_frame(1514);
  Bytes payload = etherip(frame);
  for (bool reverse : {false, true}) {
    auto frags = fragments4(payload, {1480}, reverse ? 100 : 101);
    if (reverse) std::swap(frags[0], frags[1]);
    auto before = counters("dcx");
    auto r1 = decap(frags[0]);
    EXPECT_EQ(r1.verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
    auto r2 = decap(frags[1]);
    ASSERT_EQ(r2.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
    EXPECT_EQ(r2.out, frame);
    auto after = counters("dcx");
    EXPECT_EQ(after.reassembled - before.reassembled, 1u);
    EXPECT_EQ(after.rx_fragments - before.rx_fragments, 2u);
    EXPECT_EQ(after.rx_packets - before.rx_packets, 1u);
    EXPECT_EQ(after.total_drops(), before.total_drops());
  }
}

TEST_F(DatapathTest, ReassemblesTaggedFrameFromThreeFragmentsOutOfOrder) {
  Bytes frame = inner_frame(1518, 0x8100, 9);
  auto frags = fragments4(etherip(frame), {504, 1008}, 102);
  EXPECT_EQ(decap(frags[2]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  EXPECT_EQ(decap(frags[0]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  auto r = decap(frags[1]);
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  EXPECT_EQ(r.out, frame);
}

TEST_F(DatapathTest, InterleavedDatagramsDoNotMix) {
  Bytes a = inner_frame(1400, 0x0800, 1), b = inner_frame(1400, 0x0800, 2);
  auto fa = fragments4(etherip(a), {800}, 200), fb = fragments4(etherip(b), {800}, 201);
  EXPECT_EQ(decap(fa[0]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  EXPECT_EQ(decap(fb[1]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  auto rb = decap(fb[0]);
  auto ra = decap(fa[1]);
  EXPECT_EQ(rb.out, b);
  EXPECT_EQ(ra.out, a);
}

TEST_F(DatapathTest, OverlappingFragmentsDropTheDatagram) {
  Bytes payload = etherip(inner_frame(1514));
  auto frags = fragments4(payload, {1480}, 300);
  auto overlap = fragments4(payload, {1472}, 300);  // second piece starts inside the first
  auto before = counters("dcx");
  EXPECT_EQ(decap(frags[0]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  EXPECT_EQ(decap(overlap[1]).verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx").drop(Drop::kFragOverlap) - before.drop(Drop::kFragOverlap), 1u);
  // The datagram is gone: its real second half alone completes nothing.
  EXPECT_EQ(decap(frags[1]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  // Duplicate of a piece: overlap too.
  EXPECT_EQ(decap(frags[1]).verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx").drop(Drop::kFragOverlap) - before.drop(Drop::kFragOverlap), 2u);
}

TEST_F(DatapathTest, OversizeAndMalformedFragmentsAreDropped) {
  auto before = counters("dcx");
  Bytes big(10000, 0x42);  // beyond the 9240-byte limit (ETHERIP_FRAG_MAX)
  auto frags = fragments4(big, {1480, 2960, 4440, 5920, 7400, 8880}, 400);
  EXPECT_EQ(decap(frags[0]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  EXPECT_EQ(decap(frags[6]).verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx").drop(Drop::kFragOversize) - before.drop(Drop::kFragOversize), 1u);

  auto odd = fragments4(etherip(inner_frame(1000)), {501}, 401);  // non-last not 8-aligned
  EXPECT_EQ(decap(odd[0]).verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx").drop(Drop::kFragMalformed) - before.drop(Drop::kFragMalformed), 1u);
}

TEST_F(DatapathTest, FragmentsFromUnknownPeerAreDropped) {
  auto before = counters("dcx");
  auto frags = fragments4(etherip(inner_frame(1514)), {1480}, 500, "192.0.2.77");
  EXPECT_EQ(decap(frags[0]).verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx").drop(Drop::kUnknownPeer) - before.drop(Drop::kUnknownPeer), 1u);
}

TEST_F(DatapathTest, ReassembledWrongVersionIsDropped) {
  auto before = counters("dcx");
  auto frags = fragments4(etherip(inner_frame(1514), 0x4000), {1480}, 600);
  EXPECT_EQ(decap(frags[0]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  EXPECT_EQ(decap(frags[1]).verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("dcx").drop(Drop::kBadVersion) - before.drop(Drop::kBadVersion), 1u);
}

TEST_F(DatapathTest, ReassemblesIpv6Fragments) {
  Bytes frame = inner_frame(1514);
  Bytes payload = etherip(frame);
  auto piece = [&](size_t start, size_t end, bool more) {
    Bytes fh = {ETHERIP_IPPROTO, 0};
    put16(fh, static_cast<uint16_t>(start | (more ? 1 : 0)));
    for (uint8_t b : {0x12, 0x34, 0x56, 0x78}) fh.push_back(b);
    fh.insert(fh.end(), payload.begin() + start, payload.begin() + end);
    return outer6("2001:db8::2", "2001:db8::1", fh, 44);
  };
  auto before = counters("dcx6");
  EXPECT_EQ(decap(piece(1232, payload.size(), false)).verdict,
            static_cast<uint32_t>(TC_ACT_STOLEN));
  auto r = decap(piece(0, 1232, true));
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  EXPECT_EQ(r.out, frame);
  EXPECT_EQ(counters("dcx6").reassembled - before.reassembled, 1u);
}

TEST_F(DatapathTest, StaleDatagramTimesOut) {
  auto before = counters("dcx");
  auto frags = fragments4(etherip(inner_frame(1514)), {1480}, 700);
  EXPECT_EQ(decap(frags[0]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  std::this_thread::sleep_for(std::chrono::nanoseconds(ETHERIP_FRAG_TIMEOUT_NS) +
                              std::chrono::milliseconds(200));
  // The late second half finds the first one expired: counted, and it is held alone.
  EXPECT_EQ(decap(frags[1]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  EXPECT_EQ(counters("dcx").drop(Drop::kFragTimeout) - before.drop(Drop::kFragTimeout), 1u);
}

// ------------------------------------------------------------------------------ concurrency
//
// Fragments of one datagram may be processed at the same moment on different CPUs (RSS/RPS
// spreading, several underlay queues, senders pinned to CPUs). BPF_PROG_TEST_RUN runs the
// program on the calling thread's CPU, so threads pinned to different CPUs make it happen.

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

void pin_to_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// An inner frame that names its datagram: sequence number right after the Ethernet header, then
// a pattern seeded by it, so that a frame put together from pieces of two datagrams matches
// neither of them.
constexpr uint16_t kNumberedType = 0x88b5;  // IEEE local experimental EtherType
Bytes numbered_frame(uint32_t seq, size_t size) {
  Bytes b = ether({0x02, 0, 0, 0, 0, 2}, {0x02, 0, 0, 0, 0, 1}, kNumberedType);
  for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<uint8_t>(seq >> shift));
  for (size_t i = b.size(); i < size; ++i)
    b.push_back(static_cast<uint8_t>((size_t{seq} * 131 + i * 7) ^ (i >> 8) ^ (seq >> 8)));
  return b;
}

// Sequence number of a frame built by numbered_frame, or -1.
int64_t frame_seq(const Bytes& frame) {
  if (frame.size() < 18 || ((frame[12] << 8) | frame[13]) != kNumberedType) return -1;
  return (int64_t{frame[14]} << 24) | (frame[15] << 16) | (frame[16] << 8) | frame[17];
}

// Cut points (multiples of 8) that split a payload into `pieces` pieces of about equal size,
// shifted by a few blocks at random.
std::vector<size_t> random_cuts(size_t size, size_t pieces, std::mt19937& rng) {
  std::vector<size_t> cuts;
  size_t prev = 0;
  for (size_t i = 1; i < pieces; ++i) {
    long at = static_cast<long>(size * i / pieces / 8) + static_cast<long>(rng() % 7) - 3;
    size_t cut = static_cast<size_t>(std::max<long>(at, 1)) * 8;
    if (cut <= prev) cut = prev + 8;
    if (cut >= size) break;
    cuts.push_back(cut);
    prev = cut;
  }
  return cuts;
}

// IPv6 fragments (fragment header right after the fixed header) of an EtherIP payload.
std::vector<Bytes> fragments6(const Bytes& payload, std::vector<size_t> cuts, uint32_t id,
                              const char* src = "2001:db8::2") {
  std::vector<Bytes> out;
  cuts.push_back(payload.size());
  size_t start = 0;
  for (size_t i = 0; i < cuts.size(); ++i) {
    bool more = i + 1 < cuts.size();
    Bytes body = {ETHERIP_IPPROTO, 0};
    put16(body, static_cast<uint16_t>(start | (more ? 1 : 0)));
    for (int shift = 24; shift >= 0; shift -= 8) body.push_back(static_cast<uint8_t>(id >> shift));
    body.insert(body.end(), payload.begin() + static_cast<long>(start),
                payload.begin() + static_cast<long>(cuts[i]));
    Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, 0x86dd);
    append(b, ipv6(src, "2001:db8::1", 44, body));
    out.push_back(b);
    start = cuts[i];
  }
  return out;
}

struct Datagram {
  uint32_t seq = 0;
  bool v6 = false;
  Bytes frame;
  std::vector<Bytes> fragments;
};

enum class Families { kBoth, kV4, kV6 };

// Datagrams numbered from first: IPv4 (tunnel dcx) and IPv6 (dcx6) alternately, or one of them,
// 60 to max_frame bytes (one in 16 max_frame), each in 0 to 4 more fragments than it needs at
// about 1450 bytes per fragment (2 at least). IPv4 ids are unique among any 32768 consecutive
// numbers, IPv6 ids are 0x10000000 + number.
std::vector<Datagram> numbered_datagrams(uint32_t first, size_t count, size_t max_frame,
                                         Families families, std::mt19937& rng) {
  std::vector<Datagram> out;
  for (size_t i = 0; i < count; ++i) {
    Datagram d;
    d.seq = first + static_cast<uint32_t>(i);
    d.v6 = families == Families::kV6 || (families == Families::kBoth && d.seq % 2);
    size_t size = rng() % 16 == 0 ? max_frame : 60 + rng() % (max_frame - 59);
    d.frame = numbered_frame(d.seq, size);
    Bytes payload = etherip(d.frame);
    size_t needed = (payload.size() + 1447) / 1448;
    size_t pieces = std::max<size_t>(2, needed) + rng() % 5;
    pieces = std::min(pieces, payload.size() / 8);
    auto cuts = random_cuts(payload.size(), pieces, rng);
    d.fragments = d.v6
                      ? fragments6(payload, cuts, 0x10000000u + d.seq)
                      : fragments4(payload, cuts, static_cast<uint16_t>(0x8000 | (d.seq & 0x7fff)));
    out.push_back(std::move(d));
  }
  return out;
}

// Per-CPU values of one tunnel's counters (the `stats` map is per CPU).
std::vector<etherip_stats> per_cpu_stats(const std::string& pin_dir, uint32_t key) {
  int fd = bpf_obj_get((pin_dir + "/stats").c_str());
  std::vector<etherip_stats> out(static_cast<size_t>(libbpf_num_possible_cpus()));
  if (fd < 0) return {};
  if (bpf_map_lookup_elem(fd, &key, out.data()) != 0) out.clear();
  ::close(fd);
  return out;
}

std::string per_cpu_text(const std::vector<etherip_stats>& before,
                         const std::vector<etherip_stats>& after, size_t* cpus_used) {
  std::string text;
  *cpus_used = 0;
  for (size_t c = 0; c < after.size() && c < before.size(); ++c) {
    uint64_t f = after[c].rx_fragments - before[c].rx_fragments;
    uint64_t r = after[c].reassembled - before[c].reassembled;
    if (!f && !r) continue;
    ++*cpus_used;
    text += "  cpu" + std::to_string(c) + ": " + std::to_string(f) + " fragments, " +
            std::to_string(r) + " reassembled\n";
  }
  return text;
}

// One fragment handed to the program by a given thread, and when.
// One fragment for one thread; a thread runs the jobs of step s of a group after every thread
// has reached step s.
struct Job {
  const Datagram* datagram;
  const Bytes* packet;
  size_t step;
};
struct Group {
  size_t steps = 1;
  std::vector<std::vector<Job>> lists;  // per thread, in step order
};
struct Span {
  uint32_t seq;
  int cpu;
  int64_t start_ns, end_ns;
};

int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// Releases all threads within a fraction of a microsecond of the last one's arrival when the
// CPUs are free (a futex wake-up would take tens), sleeping when the wait is long (the machine
// is shared).
class SpinBarrier {
 public:
  explicit SpinBarrier(size_t n) : n_(n) {}
  void wait() {
    uint64_t gen = gen_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      arrived_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      gen_.notify_all();
      return;
    }
    // Spin first, so that the threads leave together; then sleep on the futex: a yield loop
    // on a CPU that other processes want (ctest -j, TCG guests) waited for whole time slices,
    // thousands of times per test.
    for (int spins = 0; spins < 2000; ++spins)
      if (gen_.load(std::memory_order_acquire) != gen) return;
    while (gen_.load(std::memory_order_acquire) == gen) gen_.wait(gen, std::memory_order_acquire);
  }

 private:
  const size_t n_;
  std::atomic<size_t> arrived_{0};
  std::atomic<uint64_t> gen_{0};
};

// How a group's fragments are dealt to the threads.
enum class Deal {
  // Every thread walks the group in datagram order with its share of each datagram's pieces
  // (in random order), so pieces of one datagram tend to meet on different CPUs.
  kLockstep,
  // Like lockstep, but all threads start each datagram together (a spin barrier per
  // datagram): its pieces run on different CPUs at the same instant.
  kDuel,
  // The group's fragments in random order, round-robin: many datagrams interleaved.
  kShuffled,
};

Group deal(const std::vector<Datagram>& all, size_t begin, size_t end, size_t threads, Deal how,
           std::mt19937& rng) {
  Group g;
  g.lists.resize(threads);
  if (how == Deal::kShuffled) {
    std::vector<Job> jobs;
    for (size_t i = begin; i < end; ++i)
      for (const auto& f : all[i].fragments) jobs.push_back({&all[i], &f, 0});
    std::shuffle(jobs.begin(), jobs.end(), rng);
    for (size_t k = 0; k < jobs.size(); ++k) g.lists[k % threads].push_back(jobs[k]);
    return g;
  }
  if (how == Deal::kDuel) g.steps = end - begin;
  for (size_t i = begin; i < end; ++i) {
    std::vector<const Bytes*> pieces;
    for (const auto& f : all[i].fragments) pieces.push_back(&f);
    std::shuffle(pieces.begin(), pieces.end(), rng);
    size_t first = rng() % threads, step = how == Deal::kDuel ? i - begin : 0;
    for (size_t k = 0; k < pieces.size(); ++k)
      g.lists[(first + k) % threads].push_back({&all[i], pieces[k], step});
  }
  return g;
}

TEST_F(DatapathTest, ConcurrentFragmentsOnSeveralCpusAreReassembledExactlyOnce) {
  const auto cpus = allowed_cpus();
  const size_t threads = std::clamp<size_t>(cpus.size(), 2, 8);
  const size_t count = in_vm() ? 6000 : 40000;
  constexpr size_t kGroup = 32;  // datagrams in flight at once, well below the table's capacity
  const size_t max_frame = ETHERIP_FRAG_MAX - 2;  // 9238: a 9216-byte MTU, two VLAN tags
  std::mt19937 rng(20261125);
  const auto datagrams = numbered_datagrams(0, count, max_frame, Families::kBoth, rng);
  size_t fragments[2] = {0, 0};
  for (const auto& d : datagrams) fragments[d.v6] += d.fragments.size();

  std::vector<Group> plan;
  const Deal modes[] = {Deal::kLockstep, Deal::kDuel, Deal::kShuffled, Deal::kDuel};
  for (size_t g = 0; g * kGroup < count; ++g)
    plan.push_back(
        deal(datagrams, g * kGroup, std::min(count, (g + 1) * kGroup), threads, modes[g % 4], rng));

  auto before4 = counters("dcx"), before6 = counters("dcx6");
  auto cpu_before = per_cpu_stats(dp_->pin_dir(), static_cast<uint32_t>(index("eip-dcx")));
  std::vector<std::atomic<uint32_t>> delivered(count);
  std::atomic<uint64_t> corrupt{0}, unexpected{0}, failed_runs{0};
  std::vector<std::vector<Span>> spans(threads);
  SpinBarrier sync(threads);
  const int prog = dp_->decap_fd(), ifindex = index("u0");

  auto worker = [&](size_t t) {
    pin_to_cpu(cpus[t % cpus.size()]);
    Bytes out(16384);
    spans[t].reserve(fragments[0] + fragments[1]);
    for (const auto& group : plan) {
      auto job_it = group.lists[t].begin();
      for (size_t step = 0; step < group.steps; ++step) {
        sync.wait();
        for (; job_it != group.lists[t].end() && job_it->step == step; ++job_it) {
          const Job& job = *job_it;
          int64_t start = monotonic_ns();
          TestRun run = test_run(prog, *job.packet, ifindex, out);
          int64_t end = monotonic_ns();
          spans[t].push_back({job.datagram->seq, sched_getcpu(), start, end});
          if (run.error) {
            ++failed_runs;
          } else if (run.verdict == TC_ACT_REDIRECT) {
            Bytes frame(out.begin(), out.begin() + static_cast<long>(run.out_len));
            int64_t seq = frame_seq(frame);
            if (seq >= 0 && static_cast<size_t>(seq) < count &&
                frame == padded(datagrams[static_cast<size_t>(seq)].frame))
              ++delivered[static_cast<size_t>(seq)];
            else
              ++corrupt;
          } else if (run.verdict != TC_ACT_STOLEN) {
            ++unexpected;
          }
        }
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(worker, t);
  for (auto& th : pool) th.join();

  size_t missing = 0, duplicated = 0;
  for (auto& n : delivered) {
    missing += n == 0;
    duplicated += n > 1;
  }
  // Datagrams whose fragments were in BPF_PROG_TEST_RUN on two CPUs at overlapping times.
  std::vector<std::vector<Span>> by_seq(count);
  for (auto& list : spans)
    for (auto& s : list) by_seq[s.seq].push_back(s);
  size_t simultaneous = 0;
  std::set<int> cpus_seen;
  for (auto& list : by_seq) {
    bool both = false;
    for (size_t a = 0; a < list.size() && !both; ++a) {
      cpus_seen.insert(list[a].cpu);
      for (size_t b = a + 1; b < list.size() && !both; ++b)
        both = list[a].cpu != list[b].cpu && list[a].start_ns < list[b].end_ns &&
               list[b].start_ns < list[a].end_ns;
    }
    simultaneous += both;
  }
  auto after4 = counters("dcx"), after6 = counters("dcx6");
  size_t cpus_used = 0;
  std::string per_cpu = per_cpu_text(
      cpu_before, per_cpu_stats(dp_->pin_dir(), static_cast<uint32_t>(index("eip-dcx"))),
      &cpus_used);
  std::printf(
      "  %zu datagrams (%zu fragments, frames up to %zu bytes) by %zu threads on %zu CPU(s):\n"
      "  %zu datagrams had fragments in the program on two CPUs at overlapping times\n"
      "  delivered once: %zu, missing: %zu, duplicated: %zu, corrupt: %llu\n"
      "  tunnel dcx per CPU:\n%s",
      count, fragments[0] + fragments[1], max_frame, threads, cpus_seen.size(), simultaneous,
      count - missing - duplicated, missing, duplicated,
      static_cast<unsigned long long>(corrupt.load()), per_cpu.c_str());
  if (cpus.size() < 2)
    std::printf("  one CPU only: the threads take turns, nothing runs in parallel here\n");
  for (size_t i = 0; i < kDropReasons; ++i) {
    uint64_t n = after4.drops[i] - before4.drops[i] + after6.drops[i] - before6.drops[i];
    if (n)
      std::printf("  drops %s: %llu\n", std::string(drop_name(static_cast<Drop>(i))).c_str(),
                  static_cast<unsigned long long>(n));
  }

  EXPECT_EQ(failed_runs.load(), 0u);
  EXPECT_EQ(unexpected.load(), 0u) << "fragments dropped";
  EXPECT_EQ(corrupt.load(), 0u) << "frames that are no datagram's bytes";
  EXPECT_EQ(missing, 0u) << "datagrams never delivered";
  EXPECT_EQ(duplicated, 0u) << "datagrams delivered more than once";
  EXPECT_EQ(after4.reassembled - before4.reassembled + after6.reassembled - before6.reassembled,
            count);
  EXPECT_EQ(after4.rx_fragments - before4.rx_fragments, fragments[0]);
  EXPECT_EQ(after6.rx_fragments - before6.rx_fragments, fragments[1]);
  EXPECT_EQ(after4.total_drops() - before4.total_drops(), 0u);
  EXPECT_EQ(after6.total_drops() - before6.total_drops(), 0u);
  if (cpus.size() >= 2) {
    EXPECT_GE(cpus_seen.size(), 2u);
    EXPECT_GT(simultaneous, 0u) << "the threads never overlapped: nothing was proven";
  }
}

// The same through the kernel's receive path: threads pinned to different CPUs send the
// fragments into u1 (packet sockets); veth hands each to u0's TC ingress on the sending CPU;
// the reassembled frames leave through eip-dcx and are captured on dcx.
TEST_F(DatapathTest, RealFragmentsSentFromSeveralCpusAreReassembledExactlyOnce) {
  const auto cpus = allowed_cpus();
  const size_t threads = std::clamp<size_t>(cpus.size(), 2, 8);
  const size_t count = in_vm() ? 2000 : 10000;
  constexpr size_t kGroup = 16;
  std::mt19937 rng(3378);
  // IPv4 only (tunnel dcx), frames that fit dcx's 1500-byte MTU.
  const auto datagrams = numbered_datagrams(0, count, 1514, Families::kV4, rng);
  size_t fragments = 0;
  for (const auto& d : datagrams) fragments += d.fragments.size();
  std::vector<Group> plan;
  for (size_t g = 0; g * kGroup < count; ++g)
    plan.push_back(deal(datagrams, g * kGroup, std::min(count, (g + 1) * kGroup), threads,
                        Deal::kLockstep, rng));

  int capture = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
  ASSERT_GE(capture, 0);
  int rcvbuf = 256 << 20;
  ::setsockopt(capture, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
  sockaddr_ll where{};
  where.sll_family = AF_PACKET;
  where.sll_protocol = htons(ETH_P_ALL);
  where.sll_ifindex = index("dcx");
  ASSERT_EQ(::bind(capture, reinterpret_cast<sockaddr*>(&where), sizeof(where)), 0);

  auto before = counters("dcx");
  const uint32_t key = static_cast<uint32_t>(index("eip-dcx"));
  auto cpu_before = per_cpu_stats(dp_->pin_dir(), key);
  SpinBarrier sync(threads);
  std::atomic<uint64_t> send_errors{0};
  auto sender = [&](size_t t) {
    pin_to_cpu(cpus[t % cpus.size()]);
    int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = index("u1");
    to.sll_halen = 6;
    for (const auto& group : plan) {
      sync.wait();
      for (const Job& job : group.lists[t])
        if (::sendto(fd, job.packet->data(), job.packet->size(), 0,
                     reinterpret_cast<sockaddr*>(&to), sizeof(to)) < 0)
          ++send_errors;
    }
    ::close(fd);
  };
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(sender, t);
  for (auto& th : pool) th.join();

  std::vector<uint32_t> delivered(count);
  size_t corrupt = 0, received = 0;
  Bytes buf(65536);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(in_vm() ? 60 : 10);
  while (received < count && std::chrono::steady_clock::now() < deadline) {
    pollfd p{capture, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    ssize_t n = ::recv(capture, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n <= 0) continue;
    Bytes frame(buf.begin(), buf.begin() + n);
    int64_t seq = frame_seq(frame);
    if (seq < 0) continue;  // not ours (none expected, but dcx is an ordinary link)
    ++received;
    if (static_cast<size_t>(seq) < count &&
        frame == padded(datagrams[static_cast<size_t>(seq)].frame))
      ++delivered[static_cast<size_t>(seq)];
    else
      ++corrupt;
  }
  // Late duplicates would arrive right behind: look a little longer.
  for (int idle = 0; idle < 3;) {
    pollfd p{capture, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) {
      ++idle;
      continue;
    }
    ssize_t n = ::recv(capture, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n > 0 && frame_seq(Bytes(buf.begin(), buf.begin() + n)) >= 0) ++corrupt;
  }
  ::close(capture);

  size_t missing = 0, duplicated = 0;
  for (auto n : delivered) {
    missing += n == 0;
    duplicated += n > 1;
  }
  auto after = counters("dcx");
  size_t cpus_used = 0;
  std::string per_cpu = per_cpu_text(cpu_before, per_cpu_stats(dp_->pin_dir(), key), &cpus_used);
  std::printf(
      "  %zu datagrams (%zu fragments) sent by %zu threads pinned to %zu CPU(s)\n"
      "  delivered once: %zu, missing: %zu, duplicated: %zu, corrupt or extra: %zu\n"
      "  reassembled per CPU:\n%s",
      count, fragments, threads, cpus.size(), count - missing - duplicated, missing, duplicated,
      corrupt, per_cpu.c_str());
  EXPECT_EQ(send_errors.load(), 0u);
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(duplicated, 0u);
  EXPECT_EQ(corrupt, 0u);
  EXPECT_EQ(after.reassembled - before.reassembled, count);
  EXPECT_EQ(after.rx_fragments - before.rx_fragments, fragments);
  EXPECT_EQ(after.total_drops() - before.total_drops(), 0u);
  if (cpus.size() >= 2) {
    EXPECT_GE(cpus_used, 2u) << "the fragments were not spread over CPUs";
  }
}

// Far more datagrams in flight than the table holds, from several CPUs: datagrams get lost
// (pushed out), but every loss is counted and no frame is delivered twice or assembled from two
// datagrams' bytes. IPv6 ids of their own: the incomplete datagrams left behind stay in the
// table (until pushed out or timed out) and must not meet a later test's.
TEST_F(DatapathTest, OverfullReassemblyTableLosesDatagramsVisiblyButNeverMixesThem) {
  const auto cpus = allowed_cpus();
  const size_t threads = std::clamp<size_t>(cpus.size(), 2, 8);
  const size_t count = in_vm() ? 2000 : 8000;
  constexpr uint32_t kFirst = 1000000;
  constexpr size_t kGroup = 512;  // twice the table's 256 slots
  std::mt19937 rng(1918);
  const auto datagrams = numbered_datagrams(kFirst, count, 1514, Families::kV6, rng);
  std::vector<Group> plan;
  for (size_t g = 0; g * kGroup < count; ++g)
    plan.push_back(deal(datagrams, g * kGroup, std::min(count, (g + 1) * kGroup), threads,
                        Deal::kShuffled, rng));
  auto before = counters("dcx6");
  std::vector<std::atomic<uint32_t>> delivered(count);
  std::atomic<uint64_t> corrupt{0}, other{0};
  SpinBarrier sync(threads);
  const int prog = dp_->decap_fd(), ifindex = index("u0");
  auto worker = [&](size_t t) {
    pin_to_cpu(cpus[t % cpus.size()]);
    Bytes out(16384);
    for (const auto& group : plan) {
      sync.wait();
      for (const Job& job : group.lists[t]) {
        TestRun run = test_run(prog, *job.packet, ifindex, out);
        if (run.error == 0 && run.verdict == TC_ACT_REDIRECT) {
          Bytes frame(out.begin(), out.begin() + static_cast<long>(run.out_len));
          int64_t seq = frame_seq(frame) - kFirst;
          if (seq >= 0 && static_cast<size_t>(seq) < count &&
              frame == padded(datagrams[static_cast<size_t>(seq)].frame))
            ++delivered[static_cast<size_t>(seq)];
          else
            ++corrupt;
        } else if (run.error || (run.verdict != TC_ACT_STOLEN && run.verdict != TC_ACT_SHOT)) {
          ++other;  // failed run, or a verdict reassembly never gives
        }
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(worker, t);
  for (auto& th : pool) th.join();

  size_t once = 0, duplicated = 0;
  for (auto& n : delivered) {
    once += n == 1;
    duplicated += n > 1;
  }
  auto after = counters("dcx6");
  uint64_t evicted = after.drop(Drop::kFragEvicted) - before.drop(Drop::kFragEvicted);
  uint64_t timeouts = after.drop(Drop::kFragTimeout) - before.drop(Drop::kFragTimeout);
  std::printf(
      "  %zu datagrams, %zu in flight at a time, %zu threads: %zu delivered, %zu lost, "
      "%llu frag_evicted, %llu frag_timeout, %llu corrupt, %zu duplicated\n",
      count, kGroup, threads, once, count - once - duplicated,
      static_cast<unsigned long long>(evicted), static_cast<unsigned long long>(timeouts),
      static_cast<unsigned long long>(corrupt.load()), duplicated);
  EXPECT_EQ(other.load(), 0u);
  EXPECT_EQ(corrupt.load(), 0u);
  EXPECT_EQ(duplicated, 0u);
  EXPECT_EQ(after.reassembled - before.reassembled, once);
  EXPECT_GT(count - once, 0u) << "the table was not overfull: nothing was tested";
  EXPECT_GE(evicted + timeouts, count - once) << "datagrams lost without a count";
  // Nothing else went wrong with them.
  EXPECT_EQ(after.total_drops() - before.total_drops(), evicted + timeouts);
}

// ------------------------------------------------------------------------------ lifecycle

// ------------------------------------------------------------------------------ IPsec

// An IPv4 packet of protocol `proto` from src to 192.0.2.1 as it arrives on the underlay.
Bytes packet4(const char* src, uint8_t proto, const Bytes& payload) {
  Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, 0x0800);
  append(b, ipv4(src, "192.0.2.1", proto, payload));
  return b;
}

// An ESP packet's payload: SPI, sequence number, then bytes that stand for the ciphertext.
Bytes esp_payload(size_t size, uint8_t seed = 3) {
  Bytes b = {0x00, 0x00, 0x10, 0x01, 0, 0, 0, 1};
  for (size_t i = b.size(); i < size; ++i) b.push_back(static_cast<uint8_t>(i * 13 + seed));
  return b;
}

std::vector<Bytes> esp_fragments(const Bytes& payload, std::vector<size_t> cuts, uint16_t id) {
  return fragments4(payload, std::move(cuts), id, "192.0.2.6", 50);
}

TEST_F(DatapathTest, IpsecTunnelDropsPlaintextEtheripFromThePeerAndCountsIt) {
  // No security path: clear text, although it comes from the peer's address; fragments too.
  auto before = counters("sec");
  Bytes frame = inner_frame(100);
  auto r = decap(outer4("192.0.2.6", "192.0.2.1", etherip(frame)));
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  for (const Bytes& piece : fragments4(etherip(inner_frame(1514)), {1480}, 800, "192.0.2.6"))
    EXPECT_EQ(decap(piece).verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  // Arriving on dec-sec changes nothing: only an SA of the tunnel makes it EtherIP.
  r = run(dp_->decap_fd(), outer4("192.0.2.6", "192.0.2.1", etherip(frame)), index("dec-sec"));
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  auto after = counters("sec");
  EXPECT_EQ(after.drop(Drop::kPlaintext) - before.drop(Drop::kPlaintext), 4u);
  EXPECT_EQ(after.rx_packets, before.rx_packets);
  EXPECT_EQ(after.rx_fragments, before.rx_fragments);
  EXPECT_EQ(after.total_drops() - before.total_drops(), 4u);
  // A tunnel without IPsec still takes clear EtherIP.
  EXPECT_EQ(decap(outer4("192.0.2.2", "192.0.2.1", etherip(frame))).verdict,
            static_cast<uint32_t>(TC_ACT_REDIRECT));
}

TEST_F(DatapathTest, IpsecTunnelSendsEspFromThePeerToItsDecryptionPair) {
  auto dec_mac = hardware_address("dec-sec");
  for (size_t size : {60u, 1400u, 1480u}) {
    Bytes pkt = packet4("192.0.2.6", 50, esp_payload(size));
    auto r = decap(pkt);
    ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT)) << size;
    Bytes want = pkt;
    std::copy(dec_mac.begin(), dec_mac.end(), want.begin());  // to dec-sec, else unchanged
    EXPECT_EQ(r.out, want) << size;
  }
  // ESP of other SAs passes untouched: between a non-IPsec tunnel's endpoints, from strangers.
  for (const char* src : {"192.0.2.2", "192.0.2.99"}) {
    Bytes pkt = packet4(src, 50, esp_payload(200));
    auto r = decap(pkt);
    EXPECT_EQ(r.verdict, kUnspec) << src;
    EXPECT_EQ(r.out, pkt) << src;
  }
}

TEST_F(DatapathTest, IpsecTunnelReassemblesEspFragmentsIntoOneEspPacket) {
  auto dec_mac = hardware_address("dec-sec"), eip_mac = hardware_address("eip-sec");
  // 1590: a full frame in transport mode, as Linux sends it (encrypted, then fragmented);
  // 9330: the largest ESP datagram, beyond the largest EtherIP one.
  for (size_t size : {1590u, ETHERIP_ESP_MAX - 6u}) {
    Bytes payload = esp_payload(size, static_cast<uint8_t>(size));
    std::vector<size_t> cuts;
    for (size_t at = 1480; at < size; at += 1480) cuts.push_back(at);
    auto frags = esp_fragments(payload, cuts, static_cast<uint16_t>(900 + size % 7));
    std::swap(frags.front(), frags.back());  // any order
    auto before = counters("sec");
    for (size_t i = 0; i + 1 < frags.size(); ++i)
      EXPECT_EQ(decap(frags[i]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN)) << size;
    auto r = decap(frags.back());
    ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT)) << size;
    ASSERT_EQ(r.out.size(), 14 + 20 + size);
    EXPECT_TRUE(std::equal(dec_mac.begin(), dec_mac.end(), r.out.begin()));
    EXPECT_TRUE(std::equal(eip_mac.begin(), eip_mac.end(), r.out.begin() + 6));
    Bytes ip(r.out.begin() + 14, r.out.begin() + 34);
    EXPECT_EQ(checksum(ip.data(), ip.size()), 0) << "header checksum";
    EXPECT_EQ(ip[0], 0x45);
    EXPECT_EQ((ip[2] << 8 | ip[3]), static_cast<int>(20 + size));
    EXPECT_EQ((ip[6] << 8 | ip[7]) & 0x3fff, 0) << "not a fragment";
    EXPECT_EQ(ip[9], 50);
    EXPECT_EQ(Bytes(ip.begin() + 12, ip.begin() + 16), Bytes({192, 0, 2, 6}));
    EXPECT_EQ(Bytes(ip.begin() + 16, ip.begin() + 20), Bytes({192, 0, 2, 1}));
    EXPECT_EQ(Bytes(r.out.begin() + 34, r.out.end()), payload);
    auto after = counters("sec");
    EXPECT_EQ(after.rx_fragments - before.rx_fragments, frags.size());
    EXPECT_EQ(after.reassembled - before.reassembled, 1u);
    EXPECT_EQ(after.total_drops(), before.total_drops());
  }
  // Beyond ETHERIP_ESP_MAX: oversize.
  auto before = counters("sec");
  auto big =
      esp_fragments(esp_payload(ETHERIP_ESP_MAX + 100), {1480, 2960, 4440, 5920, 7400, 8880}, 990);
  EXPECT_EQ(decap(big[0]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  EXPECT_EQ(decap(big[6]).verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("sec").drop(Drop::kFragOversize) - before.drop(Drop::kFragOversize), 1u);
}

TEST_F(DatapathTest, EspThatComesBackFromTheDecryptionPairEncryptedIsDroppedAndCounted) {
  // No SA decrypted it in dec-sec's GRO: never to the stack (transport mode would deliver it
  // locally), dropped and counted.
  auto before = counters("sec");
  auto r = run(dp_->decap_fd(), packet4("192.0.2.6", 50, esp_payload(300)), index("dec-sec"));
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_SHOT));
  EXPECT_EQ(counters("sec").drop(Drop::kEspNoSa) - before.drop(Drop::kEspNoSa), 1u);
}

TEST_F(DatapathTest, IpsecIsRefusedForIpv6AndWithTheFastPath) {
  TunnelSpec v6{"dcx6", "2001:db8::1", "2001:db8::2", {"u0"}};
  v6.ipsec_reqid = kSecReqid;
  EXPECT_THROW(dp_->apply(v6), DatapathError);
  TunnelSpec fast{"sec", "192.0.2.1", "192.0.2.6", {"u0"}};
  fast.ipsec_reqid = kSecReqid;
  fast.fast_path = true;
  EXPECT_THROW(dp_->apply(fast), DatapathError);
  for (const auto& t : dp_->tunnels()) {
    if (t.name == "sec") {
      EXPECT_EQ(t.ipsec_reqid, kSecReqid);
      EXPECT_EQ(t.esp_headroom, kSecEspHeadroom);  // read back from the entry
    }
  }
}

TEST_F(DatapathTest, ReapplyReplacesInPlaceAndListsTunnels) {
  dp_->apply({"dcx", "192.0.2.1", "192.0.2.2", {"u0"}, false});
  auto tunnels = dp_->tunnels();
  ASSERT_EQ(tunnels.size(), 6u);
  bool found = false;
  for (const auto& t : tunnels)
    if (t.name == "dcx") {
      found = true;
      EXPECT_EQ(t.local, "192.0.2.1");
      EXPECT_EQ(t.remote, "192.0.2.2");
      EXPECT_EQ(t.underlay, std::vector<std::string>{"u0"});
    }
  EXPECT_TRUE(found);
  // A second loader in the same namespace sees the same maps (through the pins).
  Options options;
  options.bpffs = "/tmp/ectest-bpffs-" + std::to_string(::getpid());
  Datapath second = Datapath::open(options);
  EXPECT_EQ(second.tunnels().size(), 6u);
  EXPECT_EQ(second.pin_dir(), dp_->pin_dir());
}

}  // namespace
}  // namespace etherctl::datapath::test
