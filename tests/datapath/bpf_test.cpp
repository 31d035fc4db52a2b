// BPF_PROG_TEST_RUN tests of the EtherIP programs on crafted packets: verdicts, output bytes
// and counters. The process moves into private network and mount namespaces first, so the
// interfaces it creates and the bpffs it mounts vanish with it.
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <thread>

#include "datapath/bpf/etherip_common.h"
#include "datapath/datapath.hpp"
#include "datapath/host.hpp"
#include "packets.hpp"

namespace etherctl::datapath::test {
namespace {

constexpr uint32_t kUnspec = static_cast<uint32_t>(TC_ACT_UNSPEC);

// Decapsulated frames shorter than the Ethernet minimum arrive zero-padded, as from a NIC.
Bytes padded(Bytes frame) {
  if (frame.size() < 60) frame.resize(60, 0);
  return frame;
}

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
    for (const char* t : {"dcx", "dcx6", "rev", "mss"}) {
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
    TunnelSpec mss{"mss", "192.0.2.1", "192.0.2.4", {"u0"}};
    mss.clamp_tcp_mss = true;
    dp_->apply(mss);
  }
  static void TearDownTestSuite() {
    if (dp_) dp_->remove_all();
    dp_.reset();
  }

  static Result run(int prog, const Bytes& in, int ifindex, uint32_t mark = 0,
                    uint32_t gso_size = 0) {
    Result r;
    r.out.resize(in.size() + 4096);
    __sk_buff ctx{};
    ctx.ifindex = static_cast<uint32_t>(ifindex);
    ctx.ingress_ifindex = static_cast<uint32_t>(ifindex);
    ctx.mark = mark;
    ctx.gso_size = gso_size;
    if (gso_size) ctx.gso_segs = 2;
    bpf_test_run_opts opts{};
    opts.sz = sizeof(opts);
    opts.data_in = in.data();
    opts.data_size_in = static_cast<uint32_t>(in.size());
    opts.data_out = r.out.data();
    opts.data_size_out = static_cast<uint32_t>(r.out.size());
    opts.ctx_in = &ctx;
    opts.ctx_size_in = sizeof(ctx);
    opts.ctx_out = &r.ctx;
    opts.ctx_size_out = sizeof(r.ctx);
    int err = bpf_prog_test_run_opts(prog, &opts);
    EXPECT_EQ(err, 0) << "BPF_PROG_TEST_RUN failed: " << err;
    r.verdict = opts.retval;
    r.out.resize(opts.data_size_out);
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

  static constexpr Mac kUnderlayMac = {0x02, 0xaa, 0, 0, 0, 1};
  static constexpr Mac kPeerMac = {0x02, 0xaa, 0, 0, 0, 2};
  static inline std::unique_ptr<Datapath> dp_;
};

// ------------------------------------------------------------------------------ encapsulation

TEST_F(DatapathTest, EncapIpv4WrapsArpAndRedirectsIntoOwnIngress) {
  Mac bcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, vm = {0x02, 0, 0, 0, 0, 1};
  Bytes arp = ether(bcast, vm, 0x0806);
  arp.resize(42, 0x11);
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
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
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
  ASSERT_EQ(r.verdict, static_cast<uint32_t>(TC_ACT_REDIRECT));
  Bytes inner(r.out.begin() + 36, r.out.end());
  // 1500 (u0) - 20 outer IPv4 - 2 EtherIP - 14 Ethernet - 20 IPv4 - 20 TCP = 1424
  EXPECT_EQ((inner[34 + 20 + 6] << 8) | inner[34 + 20 + 7], 1424);
  EXPECT_TRUE(tcp4_checksum_ok(inner));
  // SYN-ACK too.
  r = encap(tcp4_frame(0x12, options), "mss");
  inner.assign(r.out.begin() + 36, r.out.end());
  EXPECT_EQ((inner[34 + 20 + 6] << 8) | inner[34 + 20 + 7], 1424);
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
  Bytes arp = ether(kUnderlayMac, kPeerMac, 0x0806);
  arp.resize(42, 0x22);
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
  auto check = [&](Bytes pkt, Drop reason, const char* what) {
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

// Splits an EtherIP payload into IPv4 fragments at the given payload offsets.
std::vector<Bytes> fragments4(const Bytes& payload, std::vector<size_t> cuts, uint16_t id,
                              const char* src = "192.0.2.2") {
  std::vector<Bytes> out;
  cuts.push_back(payload.size());
  size_t start = 0;
  for (size_t i = 0; i < cuts.size(); ++i) {
    bool more = i + 1 < cuts.size();
    Bytes piece(payload.begin() + start, payload.begin() + cuts[i]);
    uint16_t field = static_cast<uint16_t>((more ? 0x2000 : 0) | (start / 8));
    Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, 0x0800);
    append(b, ipv4(src, "192.0.2.1", ETHERIP_IPPROTO, piece, id, field));
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
  Bytes big(3000, 0x42);
  auto frags = fragments4(big, {1480}, 400);  // 3000 bytes: beyond the 2048-byte limit
  EXPECT_EQ(decap(frags[0]).verdict, static_cast<uint32_t>(TC_ACT_STOLEN));
  EXPECT_EQ(decap(frags[1]).verdict, static_cast<uint32_t>(TC_ACT_SHOT));
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

// ------------------------------------------------------------------------------ lifecycle

TEST_F(DatapathTest, ReapplyReplacesInPlaceAndListsTunnels) {
  dp_->apply({"dcx", "192.0.2.1", "192.0.2.2", {"u0"}, false});
  auto tunnels = dp_->tunnels();
  ASSERT_EQ(tunnels.size(), 4u);
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
  EXPECT_EQ(second.tunnels().size(), 4u);
  EXPECT_EQ(second.pin_dir(), dp_->pin_dir());
}

}  // namespace
}  // namespace etherctl::datapath::test
