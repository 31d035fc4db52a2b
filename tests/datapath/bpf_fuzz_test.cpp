// Fuzz-style BPF_PROG_TEST_RUN tests of the EtherIP programs: thousands of random and mutated
// packets through decap and encap. Every run is checked:
//   - BPF_PROG_TEST_RUN succeeds and the verdict is one the program may return;
//   - the output length is within bounds (and its bytes are the inner frame when it delivers);
//   - the counters account for the packet exactly once: delivered, passed untouched (no counter
//     moves), held as a fragment, or dropped for exactly one reason (a reassembly timeout or
//     eviction of an older datagram may be counted besides), and that reason is never
//     helper_failed;
// and after each batch valid packets (whole and fragmented, IPv4 and IPv6) still decapsulate
// correctly: junk in the reassembly map does not poison later datagrams.
//
// The seed is fixed (3378), so every run tries the same packets, and printed at the start;
// ETHERCTL_BPF_FUZZ_SEED=<n> picks another one ("random": a new one each run) and
// ETHERCTL_BPF_FUZZ_SCALE=<x> multiplies the packet counts (default 1). Packet lengths start at
// 14 bytes: BPF_PROG_TEST_RUN refuses shorter skb input (EINVAL) before any program runs, and
// IPv4/IPv6 input shorter than the IP header too (those are counted as refused).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "datapath/bpf/etherip_common.h"
#include "datapath/datapath.hpp"
#include "datapath/host.hpp"
#include "packets.hpp"
#include "test_run.hpp"

namespace etherctl::datapath::test {
namespace {

constexpr uint32_t kUnspec = static_cast<uint32_t>(TC_ACT_UNSPEC);
constexpr uint32_t kOk = TC_ACT_OK;
constexpr uint32_t kShot = TC_ACT_SHOT;
constexpr uint32_t kStolen = TC_ACT_STOLEN;
constexpr uint32_t kRedirect = TC_ACT_REDIRECT;
constexpr size_t kTimeout = static_cast<size_t>(Drop::kFragTimeout);
constexpr size_t kEvicted = static_cast<size_t>(Drop::kFragEvicted);

void sh(const std::string& cmd) { ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd; }

// " <reason>=<count>", appended piece by piece: GCC 12 at -O3 misjudges
// `" " + std::string(...)` (a false -Wrestrict in the insert at the front).
std::string drop_text(Drop reason, uint64_t count) {
  std::string text = " ";
  text += drop_name(reason);
  text += "=";
  text += std::to_string(count);
  return text;
}

// All counters of the namespace (every tunnel and the unattributed slot), summed.
struct Totals {
  uint64_t rx_packets = 0, rx_bytes = 0, tx_packets = 0, tx_bytes = 0, rx_fragments = 0,
           reassembled = 0;
  std::array<uint64_t, ETHERIP_DROP_MAX> drops{};

  Totals operator-(const Totals& o) const {
    Totals d;
    d.rx_packets = rx_packets - o.rx_packets;
    d.rx_bytes = rx_bytes - o.rx_bytes;
    d.tx_packets = tx_packets - o.tx_packets;
    d.tx_bytes = tx_bytes - o.tx_bytes;
    d.rx_fragments = rx_fragments - o.rx_fragments;
    d.reassembled = reassembled - o.reassembled;
    for (size_t i = 0; i < drops.size(); ++i) d.drops[i] = drops[i] - o.drops[i];
    return d;
  }
  // Drops but those of an older datagram given up on the way (timed out, or pushed out of a
  // full reassembly table), which any packet that reaches reassembly may count besides.
  uint64_t drops_but_given_up() const {
    uint64_t n = 0;
    for (size_t i = 0; i < drops.size(); ++i) n += i == kTimeout || i == kEvicted ? 0 : drops[i];
    return n;
  }
  uint64_t given_up() const { return drops[kTimeout] + drops[kEvicted]; }
  std::string str() const {
    std::string s = "rx " + std::to_string(rx_packets) + "/" + std::to_string(rx_bytes) + " tx " +
                    std::to_string(tx_packets) + "/" + std::to_string(tx_bytes) + " frags " +
                    std::to_string(rx_fragments) + " reasm " + std::to_string(reassembled) +
                    " drops";
    for (size_t i = 0; i < drops.size(); ++i) {
      if (drops[i]) s += drop_text(static_cast<Drop>(i), drops[i]);
    }
    return s;
  }
};

// One run of a program: what test_run() tells, the packet it left, and how the counters moved.
struct FuzzRun : TestRun {
  Bytes out;
  Totals delta;
};

std::string hex(const Bytes& b, size_t max = 96) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < b.size() && i < max; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", b[i]);
    s += buf;
  }
  return s + (b.size() > max ? "..." : "") + " (" + std::to_string(b.size()) + " bytes)";
}

Bytes padded(Bytes frame) {
  if (frame.size() < 60) frame.resize(60, 0);
  return frame;
}

void fix_ipv4_checksum(Bytes& p) {
  if (p.size() < 14 + 20) return;
  size_t ihl = static_cast<size_t>(p[14] & 0x0f) * 4;
  if (ihl < 20 || p.size() < 14 + ihl) return;
  p[24] = p[25] = 0;
  uint16_t c = checksum(p.data() + 14, ihl);
  p[24] = static_cast<uint8_t>(c >> 8);
  p[25] = static_cast<uint8_t>(c);
}

class BpfFuzzTest : public ::testing::Test {
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
    sh("sysctl -qw net.ipv4.conf.u0.forwarding=1");
    // dcx/dcx6/rev/mss take the random and mutated packets; frag and frag6 (peers .4 and ::4)
    // only well-formed fragments, so that junk never shares a reassembly key with them.
    for (const char* t : {"dcx", "dcx6", "rev", "mss", "frag", "frag6", "port"}) {
      sh(std::string("ip link add ") + t + " type veth peer name eip-" + t);
      sh(std::string("sysctl -qw net.ipv6.conf.") + t + ".disable_ipv6=1");
      sh(std::string("ip link set ") + t + " up && ip link set eip-" + t + " up");
    }
    Options options;
    bpffs_ = "/tmp/ectest-fuzz-bpffs-" + std::to_string(::getpid());
    options.bpffs = bpffs_;
    dp_ = std::make_unique<Datapath>(Datapath::open(options));
    dp_->apply({"dcx", "192.0.2.1", "192.0.2.2", {"u0"}, false});
    dp_->apply({"dcx6", "2001:db8::1", "2001:db8::2", {"u0"}, false});
    dp_->apply({"rev", "192.0.2.1", "192.0.2.3", {"u0"}, true});
    TunnelSpec mss{"mss", "192.0.2.1", "192.0.2.5", {"u0"}};
    mss.clamp_tcp_mss = true;
    dp_->apply(mss);
    dp_->apply({"frag", "192.0.2.1", "192.0.2.4", {"u0"}, false});
    dp_->apply({"frag6", "2001:db8::1", "2001:db8::4", {"u0"}, false});
    // The fast path at the tunnel port, its next hop known: frames that fit leave from there.
    sh("ip neigh add 192.0.2.6 lladdr 02:00:00:00:00:06 dev u0 nud permanent");
    TunnelSpec port{"port", "192.0.2.1", "192.0.2.6", {"u0"}};
    port.fast_path = port.port_encap = true;
    dp_->apply(port);
    stats_fd_ = bpf_obj_get((dp_->pin_dir() + "/stats").c_str());
    ASSERT_GE(stats_fd_, 0) << "pinned stats map";

    const char* seed = std::getenv("ETHERCTL_BPF_FUZZ_SEED");
    seed_ = !seed                           ? 3378
            : std::string(seed) == "random" ? std::random_device{}()
                                            : std::strtoull(seed, nullptr, 10);
    const char* scale = std::getenv("ETHERCTL_BPF_FUZZ_SCALE");
    scale_ = scale ? std::max(0.01, std::strtod(scale, nullptr)) : 1.0;
    std::printf("bpf fuzz: seed %llu (repeat with ETHERCTL_BPF_FUZZ_SEED=%llu), scale %g\n",
                static_cast<unsigned long long>(seed_), static_cast<unsigned long long>(seed_),
                scale_);
  }
  static void TearDownTestSuite() {
    std::printf(
        "bpf fuzz: %llu packets tried (%llu decap, %llu encap), %llu short IP packets refused by "
        "the kernel's test run, seed %llu\n",
        static_cast<unsigned long long>(decaps_) + encaps_,
        static_cast<unsigned long long>(decaps_), static_cast<unsigned long long>(encaps_),
        static_cast<unsigned long long>(refused_), static_cast<unsigned long long>(seed_));
    std::string verdicts, drops;
    for (const auto& [name, n] : verdicts_) verdicts += " " + name + "=" + std::to_string(n);
    for (size_t i = 0; i < drops_.size(); ++i) {
      if (drops_[i]) drops += drop_text(static_cast<Drop>(i), drops_[i]);
    }
    std::printf("bpf fuzz: verdicts%s\nbpf fuzz: drops%s\n", verdicts.c_str(), drops.c_str());
    if (stats_fd_ >= 0) ::close(stats_fd_);
    if (dp_) dp_->remove_all();
    dp_.reset();
    ::umount2(bpffs_.c_str(), MNT_DETACH);
    ::rmdir(bpffs_.c_str());
  }

  // Each test draws from its own generator, seeded from the run's seed and its name, so that a
  // test repeats on its own (--gtest_filter) with the same packets.
  void SetUp() override {
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    rng_.seed(seed_ ^ std::hash<std::string>{}(name));
  }

  static size_t count(size_t n) { return std::max<size_t>(1, static_cast<size_t>(n * scale_)); }

  static Totals totals() {
    static const int cpus = libbpf_num_possible_cpus();
    Totals t;
    std::vector<etherip_stats> per_cpu(static_cast<size_t>(cpus));
    uint32_t key = 0, next = 0;
    uint32_t* prev = nullptr;
    while (bpf_map_get_next_key(stats_fd_, prev, &next) == 0) {
      key = next;
      prev = &key;
      if (bpf_map_lookup_elem(stats_fd_, &key, per_cpu.data()) != 0) continue;
      for (const auto& s : per_cpu) {
        t.rx_packets += s.rx_packets;
        t.rx_bytes += s.rx_bytes;
        t.tx_packets += s.tx_packets;
        t.tx_bytes += s.tx_bytes;
        t.rx_fragments += s.rx_fragments;
        t.reassembled += s.reassembled;
        for (size_t i = 0; i < t.drops.size(); ++i) t.drops[i] += s.drops[i];
      }
    }
    return t;
  }

  static FuzzRun run(int prog, const Bytes& in, int ifindex, uint32_t mark = 0, uint32_t gso = 0) {
    FuzzRun r;
    r.out.resize(in.size() + 4096);
    Totals before = totals();
    static_cast<TestRun&>(r) = test_run(prog, in, ifindex, r.out, mark, gso);
    r.delta = totals() - before;
    r.out.resize(std::min<size_t>(r.out_len, r.out.size()));
    return r;
  }

  static int index(const std::string& name) {
    return static_cast<int>(if_nametoindex(name.c_str()));
  }

  // The inner frame a whole (unfragmented) EtherIP packet carries, as the sender meant it; empty
  // when `in` is not such a packet.
  static Bytes whole_inner(const Bytes& in, size_t inner_len) {
    if (in.size() < 14) return {};
    size_t off;
    if (in[12] == 0x08 && in[13] == 0x00 && in.size() >= 34) {
      off = 14 + (in[14] & 0x0f) * 4u;
    } else if (in[12] == 0x86 && in[13] == 0xdd && in.size() >= 54) {
      off = in[20] == 44 ? 62 : 54;
    } else {
      return {};
    }
    off += 2;
    if (off + inner_len > in.size()) return {};
    return Bytes(in.begin() + static_cast<long>(off),
                 in.begin() + static_cast<long>(off + inner_len));
  }

  // What the packets did, over the whole run (printed at the end).
  static void tally(const FuzzRun& r) {
    // A failed resize/copy/redirect helper is the program's fault (or a kernel limit it does
    // not respect), never the packet's: no input may cause one.
    EXPECT_EQ(r.delta.drops[static_cast<size_t>(Drop::kHelper)], 0u)
        << "helper_failed drop; seed " << seed_;
    const char* name = r.verdict == kRedirect ? "redirect"
                       : r.verdict == kStolen ? "stolen"
                       : r.verdict == kShot   ? "shot"
                       : r.verdict == kUnspec ? "unspec"
                       : r.verdict == kOk     ? "ok"
                                              : "other";
    ++verdicts_[name];
    for (size_t i = 0; i < r.delta.drops.size(); ++i) drops_[i] += r.delta.drops[i];
  }

  // The kernel's test run (6.1, 6.12 and 6.18 alike) refuses IPv4 and IPv6 input shorter than
  // the IP header with EINVAL before the program runs. Counted apart, not as tried packets.
  static bool refused_by_kernel(const Bytes& in, const FuzzRun& r) {
    if (r.error != -EINVAL || in.size() < 14) return false;
    unsigned type = (in[12] << 8) | in[13];
    if ((type == 0x0800 && in.size() < 34) || (type == 0x86dd && in.size() < 54)) {
      EXPECT_EQ(r.delta.drops_but_given_up() + r.delta.rx_packets + r.delta.tx_packets, 0u);
      ++refused_;
      return true;
    }
    return false;
  }

  // Runs decap on `in` and checks the invariants of every decap run.
  FuzzRun decap(const Bytes& in, const std::string& what) {
    FuzzRun r = run(dp_->decap_fd(), in, index("u0"));
    if (refused_by_kernel(in, r)) return r;
    ++decaps_;
    tally(r);
    const Totals& d = r.delta;
    std::string ctx = what + " seed " + std::to_string(seed_) + "\n  in:  " + hex(in) +
                      "\n  out: " + hex(r.out) + "\n  verdict " +
                      std::to_string(static_cast<int32_t>(r.verdict)) + ", counters " + d.str();
    EXPECT_EQ(r.error, 0) << "BPF_PROG_TEST_RUN failed: " << ctx;
    EXPECT_EQ(d.tx_packets + d.tx_bytes, 0u) << ctx;
    EXPECT_LE(d.given_up(), 1u) << ctx;
    switch (r.verdict) {
      case kUnspec:  // not ours, or transit: untouched and uncounted
        EXPECT_EQ(r.out, in) << ctx;
        EXPECT_EQ(
            d.rx_packets + d.rx_fragments + d.reassembled + d.drops_but_given_up() + d.given_up(),
            0u)
            << ctx;
        break;
      case kStolen:  // a fragment held for reassembly
        EXPECT_EQ(d.rx_fragments, 1u) << ctx;
        EXPECT_EQ(d.rx_packets + d.reassembled + d.drops_but_given_up(), 0u) << ctx;
        break;
      case kShot:  // dropped for one reason
        EXPECT_EQ(d.drops_but_given_up(), 1u) << ctx;
        EXPECT_EQ(d.rx_packets + d.reassembled, 0u) << ctx;
        EXPECT_LE(d.rx_fragments, 1u) << ctx;
        break;
      case kRedirect: {  // delivered into the bridge
        EXPECT_EQ(d.rx_packets, 1u) << ctx;
        EXPECT_EQ(d.drops_but_given_up(), 0u) << ctx;
        EXPECT_EQ(d.rx_fragments, d.reassembled) << ctx;
        EXPECT_LE(d.reassembled, 1u) << ctx;
        EXPECT_GE(d.rx_bytes, 14u) << ctx;
        // whole: at most the input minus the smallest outer headers; reassembled: the limit
        EXPECT_LE(d.rx_bytes, d.reassembled ? ETHERIP_FRAG_MAX - 2u : in.size() - 14 - 20 - 2)
            << ctx;
        EXPECT_EQ(r.out.size(), std::max<uint64_t>(d.rx_bytes, 60)) << ctx;
        if (d.reassembled == 0) {
          Bytes inner = whole_inner(in, d.rx_bytes);
          EXPECT_EQ(r.out, padded(inner)) << "delivered bytes are not the inner frame: " << ctx;
        }
        break;
      }
      default:
        ADD_FAILURE() << "verdict the decap program must not return: " << ctx;
    }
    return r;
  }

  // The packet encap made of `frame`: counted once; the outer headers and the frame behind
  // them, or, for an IPv6 frame beyond the 1500-byte route, the last of its fragments.
  static void check_encapsulated(const Bytes& frame, const std::string& tunnel, uint32_t gso,
                                 const FuzzRun& r, bool v6, const std::string& ctx) {
    const Totals& d = r.delta;
    EXPECT_EQ(gso, 0u) << ctx;
    EXPECT_EQ(d.tx_packets, 1u) << ctx;
    EXPECT_EQ(d.tx_bytes, frame.size()) << ctx;
    EXPECT_EQ(d.drops_but_given_up(), 0u) << ctx;
    size_t hdr = v6 ? 14 + 40 + 2 : 14 + 20 + 2;
    // An IPv6 frame that does not fit 1500 bytes: the output is the last fragment.
    size_t first = (1500 - 40 - 8) & ~7u;
    if (v6 && 40 + 2 + frame.size() > 1500) {
      // Its payload length is exact; the skb may be longer (see encap6_fragments).
      size_t last_at = (frame.size() + 2 - 1) / first * first;
      size_t rest = frame.size() + 2 - last_at;
      EXPECT_GE(r.out.size(), 14 + 40 + 8 + rest) << ctx;
      EXPECT_LE(r.out.size(), 14 + 40 + 8 + first) << ctx;
      if (r.out.size() < 62) return;
      EXPECT_EQ((r.out[18] << 8) | r.out[19], 8 + rest) << ctx;
      EXPECT_EQ(r.out[20], 44) << ctx;
      EXPECT_EQ((r.out[56] << 8) | r.out[57], last_at) << "offset, last fragment: " << ctx;
      return;
    }
    EXPECT_EQ(r.out.size(), frame.size() + hdr) << ctx;
    if (r.out.size() != frame.size() + hdr) return;
    EXPECT_EQ(r.out[hdr - 2], 0x30) << ctx;
    EXPECT_EQ(r.out[hdr - 1], 0x00) << ctx;
    if (tunnel != "mss") {  // mss may rewrite a SYN's MSS option
      EXPECT_TRUE(std::equal(frame.begin(), frame.end(), r.out.begin() + static_cast<long>(hdr)))
          << ctx;
    }
  }

  // Runs encap of `frame` on tunnel `tunnel` (or on the device `ifname` that carries none).
  FuzzRun encap(const Bytes& frame, const std::string& tunnel, uint32_t mark, uint32_t gso,
                const std::string& ifname = "") {
    std::string dev = ifname.empty() ? eip_name(tunnel) : ifname;
    FuzzRun r = run(dp_->encap_fd(), frame, index(dev), mark, gso);
    if (refused_by_kernel(frame, r)) return r;
    ++encaps_;
    tally(r);
    const Totals& d = r.delta;
    std::string ctx = "encap on " + dev + " mark " + std::to_string(mark) + " gso " +
                      std::to_string(gso) + " seed " + std::to_string(seed_) +
                      "\n  in:  " + hex(frame) + "\n  out: " + hex(r.out) + "\n  verdict " +
                      std::to_string(static_cast<int32_t>(r.verdict)) + ", counters " + d.str();
    EXPECT_EQ(r.error, 0) << "BPF_PROG_TEST_RUN failed: " << ctx;
    EXPECT_EQ(d.rx_packets + d.rx_bytes + d.rx_fragments + d.reassembled, 0u) << ctx;
    EXPECT_EQ(d.given_up(), 0u) << ctx;
    bool v6 = tunnel == "dcx6" || tunnel == "frag6";
    // IP frames (by their Ethernet type) go on to the stack from the program (TC_ACT_OK);
    // other frames, and the IPv6 send path's fragments, re-enter through eip's ingress, marked.
    const bool ip_frame = frame.size() >= 14 && ((frame[12] == 0x08 && frame[13] == 0x00) ||
                                                 (frame[12] == 0x86 && frame[13] == 0xdd));
    const bool v6_fragments = v6 && 40 + 2 + frame.size() > 1500;
    switch (r.verdict) {
      case kOk:
        if (mark == ETHERIP_MARK) {  // our own packet back from the stack
          EXPECT_EQ(r.ctx.mark, 0u) << ctx;
          EXPECT_EQ(r.out, frame) << ctx;
          EXPECT_EQ(d.tx_packets + d.drops_but_given_up(), 0u) << ctx;
          break;
        }
        EXPECT_TRUE(ip_frame && !v6_fragments) << "only whole IP frames go on directly: " << ctx;
        EXPECT_EQ(r.ctx.mark, 0u) << ctx;
        check_encapsulated(frame, tunnel, gso, r, v6, ctx);
        break;
      case kShot:
        EXPECT_NE(mark, ETHERIP_MARK) << ctx;
        EXPECT_EQ(d.drops_but_given_up(), 1u) << ctx;
        EXPECT_EQ(d.tx_packets, 0u) << ctx;
        break;
      case kRedirect:
        EXPECT_TRUE(ifname.empty()) << "encap without a tunnel: " << ctx;
        EXPECT_TRUE(!ip_frame || v6_fragments) << "an IP frame re-entered: " << ctx;
        EXPECT_EQ(r.ctx.mark, ETHERIP_MARK) << ctx;
        check_encapsulated(frame, tunnel, gso, r, v6, ctx);
        break;
      default:
        ADD_FAILURE() << "verdict the encap program must not return: " << ctx;
    }
    return r;
  }

  // Runs the tunnel port's egress program (etherip_encap_port) on `frame` leaving the device
  // `dev` ("port": a fast-path tunnel whose next hop 192.0.2.6 is known). It either leaves the
  // frame untouched and uncounted to the veth and etherip_encap, or sends it encapsulated to the
  // next hop, or drops it for one reason.
  FuzzRun encap_port(const Bytes& frame, uint32_t gso, const std::string& dev = "port") {
    FuzzRun r = run(dp_->encap_port_fd(), frame, index(dev), 0, gso);
    if (refused_by_kernel(frame, r)) return r;
    ++encaps_;
    tally(r);
    const Totals& d = r.delta;
    std::string ctx = "encap_port on " + dev + " gso " + std::to_string(gso) + " seed " +
                      std::to_string(seed_) + "\n  in:  " + hex(frame) + "\n  out: " + hex(r.out) +
                      "\n  verdict " + std::to_string(static_cast<int32_t>(r.verdict)) +
                      ", counters " + d.str();
    EXPECT_EQ(r.error, 0) << "BPF_PROG_TEST_RUN failed: " << ctx;
    EXPECT_EQ(d.rx_packets + d.rx_bytes + d.rx_fragments + d.reassembled + d.given_up(), 0u) << ctx;
    const bool ip_frame = frame.size() >= 14 && ((frame[12] == 0x08 && frame[13] == 0x00) ||
                                                 (frame[12] == 0x86 && frame[13] == 0xdd));
    const size_t hdr = 14 + 20 + 2;
    switch (r.verdict) {
      case kOk:  // to the veth, as the bridge sent it
        EXPECT_EQ(r.out, frame) << ctx;
        EXPECT_EQ(d.tx_packets + d.drops_but_given_up(), 0u) << ctx;
        break;
      case kRedirect: {  // straight to the next hop
        EXPECT_EQ(dev, "port") << ctx;
        EXPECT_TRUE(ip_frame && gso == 0 && 20 + 2 + frame.size() <= 1500) << ctx;
        EXPECT_EQ(d.tx_packets, 1u) << ctx;
        EXPECT_EQ(d.tx_bytes, frame.size()) << ctx;
        EXPECT_EQ(d.drops_but_given_up(), 0u) << ctx;
        EXPECT_EQ(r.out.size(), frame.size() + hdr) << ctx;
        if (r.out.size() != frame.size() + hdr) break;
        const Bytes next_hop{0x02, 0, 0, 0, 0, 0x06};
        EXPECT_TRUE(std::equal(next_hop.begin(), next_hop.end(), r.out.begin())) << ctx;
        EXPECT_EQ(r.out[12], 0x08) << ctx;
        EXPECT_EQ(r.out[13], 0x00) << ctx;
        EXPECT_EQ(r.out[14 + 9], 97) << ctx;
        EXPECT_EQ(checksum(r.out.data() + 14, 20), 0) << "outer IPv4 checksum: " << ctx;
        EXPECT_EQ(r.out[hdr - 2], 0x30) << ctx;
        EXPECT_EQ(r.out[hdr - 1], 0x00) << ctx;
        EXPECT_TRUE(std::equal(frame.begin(), frame.end(), r.out.begin() + static_cast<long>(hdr)))
            << ctx;
        break;
      }
      case kShot:
        EXPECT_EQ(d.drops_but_given_up(), 1u) << ctx;
        EXPECT_EQ(d.tx_packets, 0u) << ctx;
        break;
      default:
        ADD_FAILURE() << "verdict the encap_port program must not return: " << ctx;
    }
    return r;
  }

  // ---------------------------------------------------------------- generators

  size_t below(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  uint8_t byte() { return static_cast<uint8_t>(below(256)); }

  Bytes random_frame(size_t size) {
    Bytes f =
        inner_frame(std::max<size_t>(size, 14), static_cast<uint16_t>(below(0x10000)), byte());
    if (chance(0.3)) {
      for (auto& b : f) b = byte();
    }
    return f;
  }
  // A frame size: mostly small or around the MTU, sometimes anything up to the limit.
  size_t frame_size() {
    switch (below(4)) {
      case 0:
        return 14 + below(60);
      case 1:
        return 1400 + below(130);
      case 2:
        return 14 + below(2046 - 14 + 1);
      default:
        return 14 + below(1600);
    }
  }

  // A well-formed EtherIP packet for one of the fuzzed tunnels (or a stranger), whole or one
  // fragment of a datagram.
  Bytes valid_packet() {
    static const char* v4_peers[] = {"192.0.2.2", "192.0.2.3", "192.0.2.5", "192.0.2.99"};
    static const char* v4_locals[] = {"192.0.2.1", "192.0.2.1", "198.51.100.1", "203.0.113.9"};
    Bytes frame = random_frame(frame_size());
    uint16_t header = chance(0.8) ? 0x3000 : 0x0300;
    Bytes payload = etherip(frame, header);
    if (chance(0.5)) {  // IPv4
      const char* src = v4_peers[below(4)];
      const char* dst = chance(0.85) ? "192.0.2.1" : v4_locals[below(4)];
      Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, 0x0800);
      uint16_t id = static_cast<uint16_t>(below(0x10000));
      if (chance(0.6)) {
        append(b, ipv4(src, dst, ETHERIP_IPPROTO, payload, id));
      } else {  // one fragment: a random 8-aligned piece
        size_t start = below(payload.size()) & ~size_t{7};
        size_t end = std::min(payload.size(), start + 8 + (below(payload.size()) & ~size_t{7}));
        bool more = end < payload.size();
        Bytes piece(payload.begin() + static_cast<long>(start),
                    payload.begin() + static_cast<long>(end));
        append(b, ipv4(src, dst, ETHERIP_IPPROTO, piece, id,
                       static_cast<uint16_t>((more ? 0x2000 : 0) | (start / 8))));
      }
      return b;
    }
    const char* src = chance(0.85) ? "2001:db8::2" : "2001:db8::99";
    Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, 0x86dd);
    if (chance(0.6)) {
      append(b, ipv6(src, "2001:db8::1", ETHERIP_IPPROTO, payload));
      return b;
    }
    size_t start = below(payload.size()) & ~size_t{7};
    size_t end = std::min(payload.size(), start + 8 + (below(payload.size()) & ~size_t{7}));
    bool more = chance(0.1) ? !(end < payload.size()) : end < payload.size();
    Bytes fh = {ETHERIP_IPPROTO, 0};
    put16(fh, static_cast<uint16_t>(start | (more ? 1 : 0)));
    for (int i = 0; i < 4; ++i) fh.push_back(byte());
    fh.insert(fh.end(), payload.begin() + static_cast<long>(start),
              payload.begin() + static_cast<long>(end));
    append(b, ipv6(src, "2001:db8::1", 44, fh));
    return b;
  }

  // One to six mutations: bit flips, interesting bytes, truncation, extension, and changes of
  // the header fields decap reads (mostly with the IPv4 checksum fixed, to get past it).
  Bytes mutate(Bytes p) {
    static const uint8_t interesting[] = {0,    0xff, 0x7f, 0x80, 0x30, 0x03, 97,  44,
                                          0x45, 0x60, 0x20, 0x1f, 0x08, 0x86, 0xdd};
    size_t n = 1 + below(6);
    for (size_t m = 0; m < n; ++m) {
      switch (below(10)) {
        case 0:
        case 1: {  // bit flip, mostly in the headers
          size_t at = chance(0.7) ? below(std::min<size_t>(p.size(), 80)) : below(p.size());
          p[at] ^= static_cast<uint8_t>(1u << below(8));
          break;
        }
        case 2:
          p[below(std::min<size_t>(p.size(), 80))] = interesting[below(sizeof interesting)];
          break;
        case 3:  // truncation
          if (p.size() > 14) p.resize(14 + below(p.size() - 14));
          break;
        case 4: {  // extension (trailing bytes, as Ethernet padding)
          size_t more = below(chance(0.8) ? 16 : 600);
          for (size_t i = 0; i < more && p.size() < 3000; ++i) p.push_back(byte());
          break;
        }
        case 5:  // IPv4 version/IHL, or IPv6 version/traffic class
          if (p.size() > 14) p[14] = chance(0.5) ? static_cast<uint8_t>(0x40 | below(16)) : byte();
          break;
        case 6:  // IPv4 total length, or IPv6 payload length
          if (p.size() > 19) {
            size_t at = p[12] == 0x86 ? 18 : 16;
            uint16_t len = chance(0.5) ? static_cast<uint16_t>(p.size() - 14 + below(9) - 4)
                                       : static_cast<uint16_t>(below(0x10000));
            p[at] = static_cast<uint8_t>(len >> 8);
            p[at + 1] = static_cast<uint8_t>(len);
          }
          break;
        case 7:  // IPv4 id and fragment field, or the IPv6 fragment header's offset and M
          if (p[12] == 0x86 && p.size() > 62) {
            uint16_t fo = static_cast<uint16_t>(below(0x10000));
            p[56] = static_cast<uint8_t>(fo >> 8);
            p[57] = static_cast<uint8_t>(fo);
            if (chance(0.3)) p[54] = chance(0.5) ? ETHERIP_IPPROTO : byte();
          } else if (p.size() > 22) {
            uint16_t ff = static_cast<uint16_t>(below(0x10000));
            if (chance(0.5)) ff = static_cast<uint16_t>((ff & 0x2000) | below(300));
            p[20] = static_cast<uint8_t>(ff >> 8);
            p[21] = static_cast<uint8_t>(ff);
            if (chance(0.3)) {
              p[18] = byte();
              p[19] = byte();
            }
          }
          break;
        case 8: {  // EtherIP header
          static const uint16_t headers[] = {0x3000, 0x0300, 0x3001, 0x4000, 0, 0xffff, 0x3100};
          uint16_t h = chance(0.8) ? headers[below(7)] : static_cast<uint16_t>(below(0x10000));
          size_t at = p[12] == 0x86 ? (p.size() > 20 && p[20] == 44 ? 62 : 54)
                                    : 14 + (p.size() > 14 ? (p[14] & 0x0f) * 4u : 20);
          if (at + 2 <= p.size()) {
            p[at] = static_cast<uint8_t>(h >> 8);
            p[at + 1] = static_cast<uint8_t>(h);
          }
          break;
        }
        default: {  // protocol / next header, or the Ethernet type
          if (chance(0.5) && p.size() > 23) {
            size_t at = p[12] == 0x86 ? 20 : 23;
            p[at] = chance(0.5) ? (chance(0.5) ? ETHERIP_IPPROTO : 44) : byte();
          } else {
            static const uint16_t types[] = {0x0800, 0x86dd, 0x8100, 0x0806, 0x88a8};
            uint16_t t = chance(0.8) ? types[below(5)] : static_cast<uint16_t>(below(0x10000));
            p[12] = static_cast<uint8_t>(t >> 8);
            p[13] = static_cast<uint8_t>(t);
          }
        }
      }
    }
    if (p[12] == 0x08 && p[13] == 0x00 && chance(0.8)) fix_ipv4_checksum(p);
    return p;
  }

  // ---------------------------------------------------------------- valid traffic

  // Whole packets and fragmented datagrams of the tunnels frag and frag6 (IPv4 and IPv6) and
  // a whole packet of dcx and dcx6 must still be delivered byte for byte.
  void expect_valid_traffic_works() {
    SCOPED_TRACE("valid traffic after the fuzzed packets");
    for (size_t size : {14u, 60u, 1514u, 1518u}) {
      Bytes frame = inner_frame(size, 0x0800, static_cast<uint8_t>(size));
      for (const auto& [src, dst, v6] : {std::tuple{"192.0.2.2", "192.0.2.1", false},
                                         std::tuple{"192.0.2.4", "192.0.2.1", false},
                                         std::tuple{"2001:db8::2", "2001:db8::1", true},
                                         std::tuple{"2001:db8::4", "2001:db8::1", true}}) {
        Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, v6 ? 0x86dd : 0x0800);
        append(b, v6 ? ipv6(src, dst, ETHERIP_IPPROTO, etherip(frame))
                     : ipv4(src, dst, ETHERIP_IPPROTO, etherip(frame), next_id()));
        FuzzRun r = decap(b, "valid whole packet");
        ASSERT_EQ(r.verdict, kRedirect) << src << " " << size;
        EXPECT_EQ(r.out, padded(frame)) << src << " " << size;
      }
    }
    for (bool v6 : {false, true}) {
      for (size_t pieces : {2u, 3u}) {
        Bytes frame = inner_frame(1514, 0x0800, static_cast<uint8_t>(pieces));
        auto frags =
            fragments(etherip(frame),
                      pieces == 2 ? std::vector<size_t>{1480} : std::vector<size_t>{504, 1008}, v6,
                      next_id());
        std::reverse(frags.begin(), frags.end());
        for (size_t i = 0; i + 1 < frags.size(); ++i) {
          EXPECT_EQ(decap(frags[i], "valid fragment").verdict, kStolen) << v6 << " " << i;
        }
        FuzzRun r = decap(frags.back(), "valid last fragment");
        ASSERT_EQ(r.verdict, kRedirect) << v6 << " " << pieces;
        EXPECT_EQ(r.out, frame);
      }
    }
  }

  // A fresh datagram id for the frag/frag6 tunnels (never reused within a run).
  static uint32_t next_id() { return ++id_counter_; }

  // The fragments of `payload` cut at `cuts` (offsets, multiples of 8), from frag or frag6.
  static std::vector<Bytes> fragments(const Bytes& payload, std::vector<size_t> cuts, bool v6,
                                      uint32_t id) {
    std::vector<Bytes> out;
    cuts.push_back(payload.size());
    size_t start = 0;
    for (size_t i = 0; i < cuts.size(); ++i) {
      out.push_back(fragment(payload, start, cuts[i], i + 1 < cuts.size(), v6, id));
      start = cuts[i];
    }
    return out;
  }
  static Bytes fragment(const Bytes& payload, size_t start, size_t end, bool more, bool v6,
                        uint32_t id) {
    Bytes piece(payload.begin() + static_cast<long>(start),
                payload.begin() + static_cast<long>(end));
    Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, v6 ? 0x86dd : 0x0800);
    if (!v6) {
      append(b, ipv4("192.0.2.4", "192.0.2.1", ETHERIP_IPPROTO, piece, static_cast<uint16_t>(id),
                     static_cast<uint16_t>((more ? 0x2000 : 0) | (start / 8))));
      return b;
    }
    Bytes fh = {ETHERIP_IPPROTO, 0};
    put16(fh, static_cast<uint16_t>(start | (more ? 1 : 0)));
    put16(fh, static_cast<uint16_t>(id >> 16));
    put16(fh, static_cast<uint16_t>(id));
    append(fh, piece);
    append(b, ipv6("2001:db8::4", "2001:db8::1", 44, fh));
    return b;
  }

  std::mt19937_64 rng_;
  static inline std::unique_ptr<Datapath> dp_;
  static inline int stats_fd_ = -1;
  static inline std::string bpffs_;
  static inline uint64_t seed_ = 0;
  static inline double scale_ = 1;
  static inline uint64_t decaps_ = 0, encaps_ = 0, refused_ = 0;
  static inline std::map<std::string, uint64_t> verdicts_;
  static inline std::array<uint64_t, ETHERIP_DROP_MAX> drops_{};
  static inline uint32_t id_counter_ = 0x4000;  // frag/frag6 ids; fuzzed packets use other peers
};

// ------------------------------------------------------------------------------ decap

TEST_F(BpfFuzzTest, DecapRandomBytes) {
  for (size_t i = 0; i < count(3000); ++i) {
    Bytes p(14 + below(chance(0.8) ? 200 : 2200));
    for (auto& b : p) b = byte();
    if (chance(0.7)) {  // mostly an IP packet with protocol 97, to get past the first checks
      bool v6 = chance(0.4);
      p[12] = v6 ? 0x86 : 0x08;
      p[13] = v6 ? 0xdd : 0x00;
      if (p.size() > 24) {
        p[14] = v6 ? static_cast<uint8_t>(0x60 | (p[14] & 0x0f))
                   : static_cast<uint8_t>(0x45 + (chance(0.2) ? below(11) : 0));
        p[v6 ? 20 : 23] = chance(0.8) ? ETHERIP_IPPROTO : 44;
      }
      if (!v6 && chance(0.5) && p.size() >= 34) {  // a configured peer and local address
        Bytes src = {192, 0, 2, static_cast<uint8_t>(2 + below(4))}, dst = {192, 0, 2, 1};
        std::copy(src.begin(), src.end(), p.begin() + 26);
        std::copy(dst.begin(), dst.end(), p.begin() + 30);
        uint16_t len = static_cast<uint16_t>(chance(0.7) ? p.size() - 14 : below(0x10000));
        p[16] = static_cast<uint8_t>(len >> 8);
        p[17] = static_cast<uint8_t>(len);
        fix_ipv4_checksum(p);
      }
    }
    decap(p, "random bytes");
  }
  expect_valid_traffic_works();
}

TEST_F(BpfFuzzTest, DecapMutatedValidPackets) {
  for (size_t i = 0; i < count(8000); ++i) {
    Bytes valid = valid_packet();
    decap(chance(0.1) ? valid : mutate(valid), "mutated packet");
  }
  expect_valid_traffic_works();
}

TEST_F(BpfFuzzTest, DecapTruncatedAtEveryLength) {
  // Truncated as received (the headers' lengths now claim more than there is) and truncated
  // with the lengths adjusted (a shorter, well-formed packet).
  Bytes frame = inner_frame(1514, 0x0800, 7);
  Bytes small = inner_frame(100, 0x0806, 8);
  const Bytes payload = etherip(frame);
  Bytes v6frag_payload = {ETHERIP_IPPROTO, 0, 0x05, 0xa8, 1, 2, 3, 4};  // offset 1448, last
  v6frag_payload.insert(v6frag_payload.end(), payload.begin() + 1448, payload.end());
  const std::vector<std::pair<const char*, Bytes>> packets = {
      {"ipv4",
       [&] {
         Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, 0x0800);
         append(b, ipv4("192.0.2.2", "192.0.2.1", ETHERIP_IPPROTO, etherip(frame), 7));
         return b;
       }()},
      {"ipv6",
       [&] {
         Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, 0x86dd);
         append(b, ipv6("2001:db8::2", "2001:db8::1", ETHERIP_IPPROTO, etherip(small)));
         return b;
       }()},
      {"ipv4 first fragment",
       [&] {
         Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, 0x0800);
         append(b, ipv4("192.0.2.2", "192.0.2.1", ETHERIP_IPPROTO,
                        Bytes(payload.begin(), payload.begin() + 1480), 9, 0x2000));
         return b;
       }()},
      {"ipv6 last fragment",
       [&] {
         Bytes b = ether({0x02, 0xaa, 0, 0, 0, 1}, {0x02, 0xaa, 0, 0, 0, 2}, 0x86dd);
         append(b, ipv6("2001:db8::2", "2001:db8::1", 44, v6frag_payload));
         return b;
       }()},
  };
  for (const auto& [name, packet] : packets) {
    for (size_t len = 14; len < packet.size(); ++len) {
      Bytes cut(packet.begin(), packet.begin() + static_cast<long>(len));
      FuzzRun r = decap(cut, std::string("truncated ") + name);
      EXPECT_NE(r.verdict, kRedirect) << name << " truncated to " << len;
      EXPECT_NE(r.verdict, kStolen) << name << " truncated to " << len;
      if (len % 3 != 0) continue;  // adjusted lengths: every third length is enough
      bool v6 = packet[12] == 0x86;
      if (len < (v6 ? 54u : 34u)) continue;
      uint16_t l = static_cast<uint16_t>(len - 14 - (v6 ? 40 : 0));
      cut[v6 ? 18 : 16] = static_cast<uint8_t>(l >> 8);
      cut[v6 ? 19 : 17] = static_cast<uint8_t>(l);
      if (!v6) fix_ipv4_checksum(cut);
      decap(cut, std::string("shortened ") + name);  // the generic checks judge the output
    }
  }
  expect_valid_traffic_works();
}

// Datagrams of tunnel frag/frag6 cut into random 8-byte aligned pieces, sent shuffled and
// interleaved with other datagrams. A datagram whose pieces all arrive once is delivered
// exactly once, when its last piece arrives, byte for byte; faulty ones (a piece twice, a piece
// missing, an overlapping piece, a piece beyond the end) may be dropped or held, but whatever
// is delivered is exactly the frame that was sent. Junk pieces at random offsets get the
// generic checks only.
TEST_F(BpfFuzzTest, ReassemblyOfShuffledOverlappingAndMissingFragments) {
  struct Datagram {
    Bytes frame;
    std::vector<Bytes> pieces;  // in sending order
    bool clean = true;
    const char* fault = "none";
    size_t sent = 0, delivered = 0;
  };
  size_t clean = 0, faulty = 0;
  for (size_t round = 0; round < count(300); ++round) {
    std::vector<Datagram> batch(1 + below(8));
    for (auto& d : batch) {
      bool v6 = chance(0.5);
      uint32_t id = next_id();
      d.frame = random_frame(1 + below(2046));
      Bytes payload = etherip(d.frame);
      std::vector<size_t> cuts;
      for (size_t at = 8 * (1 + below(64)); at < payload.size(); at += 8 * (1 + below(120)))
        cuts.push_back(at);
      if (cuts.empty() && payload.size() > 8) cuts.push_back(8);
      d.pieces = fragments(payload, cuts, v6, id);
      std::shuffle(d.pieces.begin(), d.pieces.end(), rng_);
      if (chance(0.35)) {  // break it
        d.clean = false;
        static const char* faults[] = {"duplicate", "missing", "overlap", "beyond end", "junk"};
        size_t fault = below(5);
        d.fault = faults[fault];
        switch (fault) {
          case 0:  // a piece twice
            d.pieces.insert(d.pieces.begin() + static_cast<long>(below(d.pieces.size() + 1)),
                            d.pieces[below(d.pieces.size())]);
            break;
          case 1:  // a piece missing (never delivered then)
            d.pieces.erase(d.pieces.begin() + static_cast<long>(below(d.pieces.size())));
            break;
          case 2: {  // an overlapping piece of the same bytes
            size_t start = below(payload.size()) & ~size_t{7};
            size_t end = std::min(payload.size(), start + 8 + 8 * below(40));
            d.pieces.insert(d.pieces.begin() + static_cast<long>(below(d.pieces.size() + 1)),
                            fragment(payload, start, end, end < payload.size(), v6, id));
            break;
          }
          case 3: {  // a piece beyond the end, or a second "last" piece
            Bytes extra = payload;
            extra.resize(payload.size() + 64, 0x5a);
            size_t start = (payload.size() + 7) & ~size_t{7};
            if (start + 8 > extra.size()) start = extra.size() - 8;
            d.pieces.insert(d.pieces.begin() + static_cast<long>(below(d.pieces.size() + 1)),
                            fragment(extra, start & ~size_t{7}, extra.size(), chance(0.5), v6, id));
            break;
          }
          default: {  // a piece at a random offset
            size_t start = 8 * below(300);
            size_t len = 1 + below(300);
            Bytes junk(start + len, 0xa5);
            d.pieces.insert(d.pieces.begin() + static_cast<long>(below(d.pieces.size() + 1)),
                            fragment(junk, start, start + len, chance(0.5), v6, id));
          }
        }
      }
      (d.clean ? clean : faulty)++;
    }
    // Interleave: each step sends the next piece of a random unfinished datagram.
    for (;;) {
      std::vector<Datagram*> open;
      for (auto& d : batch)
        if (d.sent < d.pieces.size()) open.push_back(&d);
      if (open.empty()) break;
      Datagram& d = *open[below(open.size())];
      bool last = d.sent + 1 == d.pieces.size();
      FuzzRun r = decap(d.pieces[d.sent++], "reassembly");
      // A junk piece that happens to fill a hole exactly is a fragment like any other (IP
      // reassembly cannot tell): its datagram gets only the generic checks.
      if (r.verdict == kRedirect && std::string(d.fault) != "junk") {
        ++d.delivered;
        Bytes want = padded(d.frame);
        size_t at = std::mismatch(r.out.begin(), r.out.end(), want.begin(), want.end()).first -
                    r.out.begin();
        EXPECT_EQ(r.out, want) << "reassembled bytes differ at " << at << ": " << r.out.size()
                               << " bytes delivered, frame " << d.frame.size() << ", fault "
                               << d.fault << ", pieces " << d.pieces.size();
      }
      if (d.clean) {
        EXPECT_EQ(r.verdict, last ? kRedirect : kStolen)
            << "piece " << d.sent << " of " << d.pieces.size() << ", frame " << d.frame.size();
      }
    }
    for (const auto& d : batch) {
      if (d.clean) {
        EXPECT_EQ(d.delivered, 1u);
      }
    }
    if (HasFailure()) break;  // one broken round tells enough
  }
  std::printf("bpf fuzz: reassembly: %zu clean and %zu faulty datagrams\n", clean, faulty);
  expect_valid_traffic_works();
}

// ------------------------------------------------------------------------------ encap

TEST_F(BpfFuzzTest, EncapRandomFrames) {
  static const char* tunnels[] = {"dcx", "dcx6", "rev", "mss", "frag6"};
  for (size_t i = 0; i < count(4000); ++i) {
    Bytes frame = random_frame(std::min<size_t>(frame_size() + (chance(0.1) ? 1000 : 0), 3000));
    if (chance(0.3) && frame.size() >= 14 + 40 + 20) {  // a TCP SYN with random options
      bool v6 = chance(0.3);
      size_t l4 = v6 ? 54 : 34;
      frame[12] = v6 ? 0x86 : 0x08;
      frame[13] = v6 ? 0xdd : 0x00;
      if (v6) {
        frame[14] = 0x60;
        frame[14 + 6] = 6;
      } else {
        frame[14] = 0x45;
        frame[14 + 9] = 6;
        frame[14 + 6] = frame[14 + 7] = 0;  // not a fragment
      }
      frame[l4 + 12] = static_cast<uint8_t>((5 + below(11)) << 4);
      frame[l4 + 13] = chance(0.8) ? 0x02 : byte();
      if (chance(0.5) && frame.size() >= l4 + 24) {  // MSS option first
        frame[l4 + 20] = 2;
        frame[l4 + 21] = 4;
      }
    }
    uint32_t mark = chance(0.1) ? ETHERIP_MARK : chance(0.1) ? static_cast<uint32_t>(rng_()) : 0;
    uint32_t gso = chance(0.05) ? static_cast<uint32_t>(1 + below(9000)) : 0;
    if (chance(0.05)) {
      encap(frame, "", mark, gso, chance(0.5) ? "u1" : "lo");  // no tunnel there
    } else {
      encap(frame, tunnels[below(5)], mark, gso);
    }
  }
  expect_valid_traffic_works();
}

// Every frame length around the IPv6 underlay's MTU: from 1459 bytes on, the outer packet is
// sent as two fragments, and the second one is cut out of the skb. Frames of 1459 to 1461 bytes
// (here; up to 1481 for TCP/UDP/ICMP over IPv4 from a VM) were dropped as helper_failed: the
// kernel refused to trim the skb below its transport header.
TEST_F(BpfFuzzTest, EncapIpv6EveryLengthAroundTheMtu) {
  for (const char* tunnel : {"dcx6", "frag6"}) {
    for (size_t size = 1400; size <= 1600; ++size) {
      for (uint16_t type : {0x0800, 0x0806}) {
        FuzzRun r = encap(inner_frame(size, type, static_cast<uint8_t>(size)), tunnel, 0, 0);
        // Whole IP frames go on to the stack, the rest (fragments, ARP) re-enter through eip.
        const bool direct = type == 0x0800 && 40 + 2 + size <= 1500;
        EXPECT_EQ(r.verdict, direct ? kOk : kRedirect)
            << tunnel << " " << size << " " << r.delta.str();
      }
    }
  }
}

// The tunnel port's egress program: random frames (GSO ones and frames on a device that is no
// fast-path tunnel's port among them), then every IPv4 and ARP frame length around the MTU: IP
// frames whose outer packet fits the 1500-byte route go straight to the next hop, longer ones
// (outer fragmentation) and ARP are left to the veth untouched.
TEST_F(BpfFuzzTest, EncapAtTheTunnelPort) {
  for (size_t i = 0; i < count(3000); ++i) {
    Bytes frame = random_frame(std::min<size_t>(frame_size() + (chance(0.1) ? 1000 : 0), 3000));
    uint32_t gso = chance(0.05) ? static_cast<uint32_t>(1 + below(9000)) : 0;
    encap_port(frame, gso, chance(0.05) ? (chance(0.5) ? "dcx" : "u1") : "port");
  }
  for (size_t size = 1400; size <= 1600; ++size) {
    for (uint16_t type : {0x0800, 0x0806}) {
      FuzzRun r = encap_port(inner_frame(size, type, static_cast<uint8_t>(size)), 0);
      const bool direct = type == 0x0800 && 20 + 2 + size <= 1500;
      EXPECT_EQ(r.verdict, direct ? kRedirect : kOk) << size << " " << r.delta.str();
    }
  }
  expect_valid_traffic_works();
}

}  // namespace
}  // namespace etherctl::datapath::test
