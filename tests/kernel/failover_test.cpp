// lib/failover against the real keepalived (Debian's 2.2.7) in throwaway namespaces: the
// configuration etherctl renders passes `keepalived -t` and runs an election whose state shows
// in the marker address; keepalived is started, found and stopped as the agent does it; the
// advertisements on the wire parse as tshark says they should. Every keepalived is started in
// a namespace this test made and checked (and its configuration names it: net_namespace).
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "failover/advert_tap.hpp"
#include "failover/keepalived.hpp"
#include "failover/peer_signal.hpp"
#include "failover/process.hpp"
#include "failover/vrrp.hpp"
#include "support/netns.hpp"

namespace etherctl::failover {
namespace {

using test::run;
using test::run_status;
using test::TestNetns;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr const char* kKeepalived = "/usr/sbin/keepalived";
constexpr const char* kTshark = "/usr/bin/tshark";

bool have(const char* binary) { return access(binary, X_OK) == 0; }

struct TempDir {
  std::string path;
  TempDir() {
    char pattern[] = "/tmp/etherctl-failover-XXXXXX";
    if (!mkdtemp(pattern)) throw std::runtime_error("mkdtemp failed");
    path = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Enters a network namespace for the calling thread until it goes out of scope.
class Enter {
 public:
  explicit Enter(const std::string& netns) {
    home_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    const int fd = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (home_ < 0 || fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      throw std::runtime_error("cannot enter namespace " + netns);
    }
    close(fd);
  }
  ~Enter() {
    if (setns(home_, CLONE_NEWNET) != 0) std::abort();
    close(home_);
  }
  Enter(const Enter&) = delete;
  Enter& operator=(const Enter&) = delete;

 private:
  int home_ = -1;
};

bool has_marker(const std::string& netns, int virtual_router_id = 51) {
  return run("ip -n " + netns + " -o addr show dev lo")
             .find(" " + marker_address(virtual_router_id) + "/32 ") != std::string::npos;
}

// One keepalived in a namespace this test made, with the rendered configuration, started,
// found and stopped the way etherctl does it (process.hpp); stopped when it goes out of scope.
class Keepalived {
 public:
  // ready: write 0 to the agent ready file first, as the agent does once it runs.
  Keepalived(const std::string& netns, const std::string& dir, const KeepalivedSettings& settings,
             bool ready = true)
      : netns_(netns), dir_(dir), vrid_(settings.virtual_router_id) {
    if (access(("/run/netns/" + netns).c_str(), F_OK) != 0) {
      throw std::runtime_error("no namespace " + netns + ": refusing to start keepalived");
    }
    if (ready) std::ofstream(dir + "/agent-ready") << "0\n";
    files_ = {dir + "/keepalived.conf", dir + "/keepalived.pid", dir + "/vrrp.pid"};
    rewrite(settings);
    start();
  }
  ~Keepalived() { stop(); }
  Keepalived(const Keepalived&) = delete;
  Keepalived& operator=(const Keepalived&) = delete;

  void start() {
    Enter in(netns_);
    pid_ = start_keepalived(keepalived_argv(kKeepalived, files_), files_, dir_ + "/keepalived.log");
  }
  void stop() {
    if (pid_ > 0) stop_keepalived(pid_, live_pid(files_.vrrp_pid_file));
    pid_ = 0;
  }
  void rewrite(KeepalivedSettings settings) const {
    settings.agent_ready_file = dir_ + "/agent-ready";
    std::ofstream(files_.config) << render_keepalived_conf(settings);
  }

  // Waits until the unit is master (holds the marker) or not.
  bool wait_master(bool master, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = Clock::now() + timeout;
    do {
      if (has_marker(netns_, vrid_) == master) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } while (Clock::now() < deadline);
    return false;
  }
  bool master() const { return has_marker(netns_, vrid_); }
  void set_ready(bool ready) const {
    // Replaced, as the agent does (keepalived watches it with inotify).
    std::ofstream(dir_ + "/agent-ready.tmp") << (ready ? "0\n" : "1\n");
    fs::rename(dir_ + "/agent-ready.tmp", dir_ + "/agent-ready");
  }
  std::string log() const { return read_file(dir_ + "/keepalived.log"); }
  pid_t pid() const { return pid_; }
  pid_t vrrp_child() const { return live_pid(files_.vrrp_pid_file).value_or(0); }
  const KeepalivedFiles& files() const { return files_; }

 private:
  std::string netns_;
  std::string dir_;
  int vrid_;
  KeepalivedFiles files_;
  pid_t pid_ = 0;
};

KeepalivedSettings unit(const std::string& device, int priority, const std::string& netns) {
  KeepalivedSettings s;
  s.group = "dc1";
  s.device = device;
  s.interface = "wan";
  s.virtual_router_id = 51;
  s.priority = priority;
  s.advert_centiseconds = 10;
  s.netns = netns;
  return s;
}

TEST(Failover, KeepalivedAcceptsEveryRenderedVariant) {
  if (!have(kKeepalived)) GTEST_SKIP() << "no " << kKeepalived << " (Debian package keepalived)";
  TestNetns netns;
  run("ip link add wan type veth peer name wan-peer && ip link add trk type veth peer name "
      "trk-peer && ip addr add 198.51.100.11/24 dev wan");
  TempDir dir;
  std::vector<KeepalivedSettings> variants;
  for (int advert : {1, 10, 100, 150, 4095}) {
    auto s = unit("dc1-a", 200, netns.name());
    s.advert_centiseconds = advert;
    variants.push_back(s);
  }
  auto s = unit("dc1-b", 1, netns.name());
  s.preempt = false;
  variants.push_back(s);
  s = unit("dc1-b", 254, "");
  s.preempt_delay_seconds = 1000;
  s.track_interfaces = {"trk"};
  s.unicast_source = "198.51.100.11";
  s.unicast_peers = {"198.51.100.12"};
  variants.push_back(s);
  for (auto& v : variants) {
    v.agent_ready_file = dir.path + "/agent-ready";
    const std::string conf = dir.path + "/keepalived.conf";
    std::ofstream(conf) << render_keepalived_conf(v);
    auto result = run_status(std::string("ip netns exec ") + netns.name() + " " + kKeepalived +
                             " --vrrp --config-test --use-file " + conf);
    EXPECT_EQ(result.status, 0) << read_file(conf) << result.error;
    // keepalived skips what it does not know with a message only: none may appear.
    for (const char* complaint : {"Unknown keyword", "WARNING", "rror", "ignor"}) {
      EXPECT_EQ(result.error.find(complaint), std::string::npos) << complaint << "\n"
                                                                 << read_file(conf) << result.error;
    }
  }
}

// What the tap sees during `during`; with 0, what it holds now (a drain: on a busy host b can
// be master for a moment at start, and its adverts of then wait in the socket).
std::vector<SeenAdvert> read_adverts(AdvertTap& tap, std::chrono::milliseconds during) {
  std::vector<SeenAdvert> adverts;
  const auto deadline = Clock::now() + during;
  do {
    pollfd p{tap.fd(), POLLIN, 0};
    poll(&p, 1, 10);
    for (auto& seen : tap.read()) adverts.push_back(seen);
  } while (Clock::now() < deadline);
  return adverts;
}

std::string address_text(uint32_t address) {
  char text[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &address, text, sizeof text);
  return text;
}

// Both units have reached the state of their priorities, a master and b not, and stay so for
// a while (on a busy host both can be master for a moment at start, until each hears the
// other).
bool settled(Keepalived& a, Keepalived& b) {
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  auto stable_since = Clock::now();
  while (Clock::now() < deadline) {
    if (!a.master() || b.master()) stable_since = Clock::now();
    if (Clock::now() - stable_since > std::chrono::milliseconds(500)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Units a (198.51.100.11) and b (.12) with their "wan" on a switch: a bridge in `sw`, so that
// one unit's link going down leaves the other's carrier up.
void wire_pair(const TestNetns& sw, const TestNetns& a, const TestNetns& b) {
  run("ip -n " + sw.name() + " link add br0 type bridge && ip -n " + sw.name() +
      " link set br0 up");
  for (const auto* unit : {&a, &b}) {
    const std::string port = unit == &a ? "pa" : "pb";
    run("ip link add wan netns " + unit->name() + " type veth peer name " + port + " netns " +
        sw.name());
    run("ip -n " + sw.name() + " link set " + port + " master br0 up");
    run("ip -n " + unit->name() + " addr add 198.51.100." + (unit == &a ? "11" : "12") +
        "/24 dev wan && ip -n " + unit->name() + " link set wan up");
  }
}

// Two units on a switch; the test thread is in b (the namespaces are entered in order).
struct Pair {
  TestNetns sw, a, b;
  TempDir dir_a, dir_b;
  std::optional<Keepalived> ka, kb;
  Pair() { wire_pair(sw, a, b); }
  Keepalived& start_a(bool ready = true) {
    return ka.emplace(a.name(), dir_a.path, unit("dc1-a", 200, a.name()), ready);
  }
  Keepalived& start_b() { return kb.emplace(b.name(), dir_b.path, unit("dc1-b", 100, b.name())); }
};

TEST(Failover, ElectionWithTheRenderedConfiguration) {
  if (!have(kKeepalived)) GTEST_SKIP() << "no " << kKeepalived << " (Debian package keepalived)";
  Pair pair;
  AdvertTap tap("wan", 51);  // in b
  Keepalived& ka = pair.start_a();
  Keepalived& kb = pair.start_b();
  ASSERT_TRUE(settled(ka, kb)) << ka.log() << kb.log();
  const auto& a = pair.a;
  // keepalived's VRRP process is in the namespace it was started in (net_namespace agrees).
  struct stat child {
  }, expected{};
  ASSERT_EQ(stat(("/proc/" + std::to_string(ka.vrrp_child()) + "/ns/net").c_str(), &child), 0);
  ASSERT_EQ(stat(("/run/netns/" + a.name()).c_str(), &expected), 0);
  EXPECT_EQ(child.st_ino, expected.st_ino);

  // The master advertises with what the configuration says (how often is the benchmark's
  // business: bench/failover.py).
  read_adverts(tap, std::chrono::milliseconds(0));  // what came before it settled
  auto adverts = read_adverts(tap, std::chrono::milliseconds(1000));
  ASSERT_GE(adverts.size(), 3u);
  for (const auto& [advert, outgoing, at] : adverts) {
    EXPECT_FALSE(outgoing);
    EXPECT_EQ(address_text(advert.source), "198.51.100.11");
    EXPECT_EQ(advert.version, 3);
    EXPECT_EQ(advert.virtual_router_id, 51);
    EXPECT_EQ(advert.priority, 200);
    EXPECT_EQ(advert.interval_centiseconds, 10);
    EXPECT_EQ(advert.address_count, 1);
  }

  // The master's link goes down (FAULT: the marker goes), the backup takes over and advertises.
  run("ip -n " + a.name() + " link set wan down");
  ASSERT_TRUE(ka.wait_master(false)) << ka.log();
  ASSERT_TRUE(kb.wait_master(true)) << kb.log();
  adverts = read_adverts(tap, std::chrono::milliseconds(300));
  ASSERT_FALSE(adverts.empty());
  EXPECT_EQ(address_text(adverts.back().advert.source), "198.51.100.12");
  EXPECT_TRUE(adverts.back().outgoing) << "b's own, seen in b";
  EXPECT_EQ(adverts.back().advert.priority, 100);

  // It comes back and preempts (VRRP's default).
  run("ip -n " + a.name() + " link set wan up");
  ASSERT_TRUE(settled(ka, kb)) << ka.log() << kb.log();

  // A shutdown resigns: the marker goes, a priority-0 advert on the wire.
  read_adverts(tap, std::chrono::milliseconds(50));
  ka.stop();
  EXPECT_FALSE(ka.master());
  bool resigned = false;
  for (const auto& [advert, outgoing, at] : read_adverts(tap, std::chrono::milliseconds(500))) {
    if (address_text(advert.source) == "198.51.100.11" && advert.priority == 0) resigned = true;
  }
  EXPECT_TRUE(resigned);
  ASSERT_TRUE(kb.wait_master(true)) << kb.log();
}

TEST(Failover, AUnitWithoutItsAgentStaysOutOfTheElection) {
  if (!have(kKeepalived)) GTEST_SKIP() << "no " << kKeepalived << " (Debian package keepalived)";
  Pair pair;
  AdvertTap tap("wan", 51);  // in b
  // a, the higher priority, starts without a ready file: keepalived creates it holding 1.
  Keepalived& ka = pair.start_a(false);
  Keepalived& kb = pair.start_b();
  ASSERT_TRUE(kb.wait_master(true)) << kb.log();
  EXPECT_EQ(read_file(pair.dir_a.path + "/agent-ready"), "1\n");
  read_adverts(tap, std::chrono::milliseconds(50));
  for (const auto& [advert, outgoing, at] : read_adverts(tap, std::chrono::milliseconds(500))) {
    EXPECT_EQ(address_text(advert.source), "198.51.100.12") << "a unit in FAULT is silent";
  }
  EXPECT_FALSE(ka.master());
  // Its agent is ready: it joins and preempts.
  ka.set_ready(true);
  ASSERT_TRUE(settled(ka, kb)) << ka.log() << kb.log();
  // Its agent stops: FAULT at once, with a priority-0 advert so that the peer takes over
  // after its skew time rather than the master down interval.
  read_adverts(tap, std::chrono::milliseconds(50));
  ka.set_ready(false);
  ASSERT_TRUE(ka.wait_master(false)) << ka.log();
  ASSERT_TRUE(kb.wait_master(true)) << kb.log();
  bool resigned = false;
  for (const auto& [advert, outgoing, at] : read_adverts(tap, std::chrono::milliseconds(300))) {
    if (address_text(advert.source) == "198.51.100.11" && advert.priority == 0) resigned = true;
  }
  EXPECT_TRUE(resigned);
}

TEST(Failover, AdvertParsingAgreesWithTshark) {
  if (!have(kKeepalived)) GTEST_SKIP() << "no " << kKeepalived << " (Debian package keepalived)";
  if (!have(kTshark)) GTEST_SKIP() << "no " << kTshark << " (Debian package tshark)";
  TestNetns a;
  TestNetns b;
  run("ip link add wan netns " + a.name() + " type veth peer name wan netns " + b.name());
  run("ip -n " + a.name() + " addr add 198.51.100.11/24 dev wan && ip -n " + a.name() +
      " link set wan up && ip -n " + b.name() + " link set wan up");
  TempDir dir, capture_dir;
  auto settings = unit("dc1-a", 123, a.name());
  settings.virtual_router_id = 77;
  settings.advert_centiseconds = 25;
  const std::string pcap = capture_dir.path + "/vrrp.pcap";
  AdvertTap tap("wan", 77);
  Keepalived ka(a.name(), dir.path, settings);
  ASSERT_TRUE(ka.wait_master(true)) << ka.log();
  // tshark captures in b (this thread's namespace) while the tap reads the same adverts.
  run(std::string(kTshark) + " -q -i wan -a duration:2 -f 'ip proto 112' -w " + pcap +
      " 2>/dev/null");
  auto adverts = read_adverts(tap, std::chrono::milliseconds(10));
  ASSERT_FALSE(adverts.empty());
  const std::string fields =
      run(std::string(kTshark) + " -n -r " + pcap +
          " -Y vrrp -T fields -E separator=' ' -e ip.src -e vrrp.version -e vrrp.virt_rtr_id "
          "-e vrrp.prio -e vrrp.short_adver_int -e vrrp.addr_count 2>/dev/null");
  std::istringstream lines(fields);
  std::string line;
  int decoded = 0;
  const Advert& ours = adverts.back().advert;
  const std::string expected =
      address_text(ours.source) + " " + std::to_string(ours.version) + " " +
      std::to_string(ours.virtual_router_id) + " " + std::to_string(ours.priority) + " " +
      std::to_string(ours.interval_centiseconds) + " " + std::to_string(ours.address_count);
  EXPECT_EQ(expected, "198.51.100.11 3 77 123 25 1");
  while (std::getline(lines, line)) {
    EXPECT_EQ(line, expected);
    ++decoded;
  }
  EXPECT_GE(decoded, 4) << fields;
}

TEST(Failover, ACrashIsSeenAndTheProcessesAreFound) {
  if (!have(kKeepalived)) GTEST_SKIP() << "no " << kKeepalived << " (Debian package keepalived)";
  Pair pair;
  Keepalived& ka = pair.start_a();
  Keepalived& kb = pair.start_b();
  ASSERT_TRUE(settled(ka, kb)) << ka.log() << kb.log();
  {
    Enter in(pair.a.name());
    const auto found = keepalived_here();
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].pid, ka.pid());
    EXPECT_EQ(found[0].config_file, ka.files().config);
    EXPECT_EQ(found[0].vrrp_pid_file, ka.files().vrrp_pid_file);
  }
  EXPECT_EQ(keepalived_here().size(), 1u) << "b's, not a's";
  // The daemon is nobody's child: started detached, in a session of its own.
  const std::string stat = read_file("/proc/" + std::to_string(ka.pid()) + "/stat");
  EXPECT_NE(stat.substr(stat.rfind(')') + 4).rfind(std::to_string(getpid()) + " ", 0), 0u) << stat;

  // A crash: both processes stopped, then killed. A pidfd sees it; nothing else does:
  // keepalived's marker stays behind, and the peer takes over as well (a split brain).
  const pid_t child = ka.vrrp_child();
  ASSERT_GT(child, 0);
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, ka.pid(), 0));
  ASSERT_GE(pidfd, 0);
  for (int signal : {SIGSTOP, SIGKILL}) {
    kill(ka.pid(), signal);
    kill(child, signal);
  }
  pollfd p{pidfd, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 10000), 1) << "the pidfd reports the exit";
  close(pidfd);
  {
    // The VRRP child's SIGKILL is delivered on its own schedule: until it has exited, the
    // orphan (its parent now init) is a keepalived of the namespace like any other.
    Enter in(pair.a.name());
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!keepalived_here().empty() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(keepalived_here().empty());
  }
  EXPECT_TRUE(ka.master()) << "the crashed unit's marker stays";
  ASSERT_TRUE(kb.wait_master(true)) << kb.log();
  // Started again, keepalived clears the stale marker and preempts.
  ka.start();
  ASSERT_TRUE(settled(ka, kb)) << ka.log() << kb.log();
}

TEST(Failover, AReloadKeepsTheStateAndAppliesTheNewConfiguration) {
  if (!have(kKeepalived)) GTEST_SKIP() << "no " << kKeepalived << " (Debian package keepalived)";
  Pair pair;
  Keepalived& ka = pair.start_a();
  Keepalived& kb = pair.start_b();
  ASSERT_TRUE(settled(ka, kb)) << ka.log() << kb.log();
  // A reload that changes nothing of the election: the master stays master throughout, its
  // VRRP process survives it (a real-time one would be killed: keepalived.hpp).
  const pid_t before = ka.vrrp_child();
  auto s = unit("dc1-a", 200, pair.a.name());
  s.preempt_delay_seconds = 5;
  ka.rewrite(s);
  reload_keepalived(ka.pid());
  const auto until = Clock::now() + std::chrono::seconds(1);
  while (Clock::now() < until) {
    ASSERT_TRUE(ka.master()) << ka.log();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(ka.vrrp_child(), before) << ka.log();
  EXPECT_NE(read_file(ka.files().config).find("preempt_delay 5"), std::string::npos);
  // b's priority goes above a's: after a reload b preempts.
  kb.rewrite(unit("dc1-b", 250, pair.b.name()));
  reload_keepalived(kb.pid());
  ASSERT_TRUE(settled(kb, ka)) << ka.log() << kb.log();
}

TEST(Failover, TheAgentsWordCrossesTheSwitchAndOnlyThePeersCounts) {
  TestNetns sw, a, b;
  wire_pair(sw, a, b);
  std::optional<PeerSignal> on_a, on_b;
  {
    Enter in(a.name());
    on_a.emplace(51, "dc1-a", "dc1-b");
  }
  {
    Enter in(b.name());
    on_b.emplace(51, "dc1-b", "dc1-a");
  }
  in_addr a_address{}, b_address{};
  inet_pton(AF_INET, "198.51.100.11", &a_address);
  inet_pton(AF_INET, "198.51.100.12", &b_address);
  auto wait_readable = [](int fd) {
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, 2000) == 1;
  };
  EXPECT_EQ(on_a->read_standby(), 0);
  ASSERT_TRUE(on_b->send_standby(a_address.s_addr));
  ASSERT_TRUE(on_b->send_standby(a_address.s_addr));
  ASSERT_TRUE(wait_readable(on_a->fd()));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the second one too
  EXPECT_EQ(on_a->read_standby(), 2);
  EXPECT_EQ(on_a->read_standby(), 0);
  // the other direction
  ASSERT_TRUE(on_a->send_standby(b_address.s_addr));
  ASSERT_TRUE(wait_readable(on_b->fd()));
  EXPECT_EQ(on_b->read_standby(), 1);
  // Words of another group, or claiming another sender, do not count.
  std::optional<PeerSignal> other_group;
  {
    Enter in(b.name());
    on_b.reset();  // frees the port for a moment
    other_group.emplace(52, "dc1-b", "dc1-a");
  }
  ASSERT_TRUE(other_group->send_standby(a_address.s_addr));
  ASSERT_TRUE(wait_readable(on_a->fd()));
  EXPECT_EQ(on_a->read_standby(), 0);
  EXPECT_EQ(standby_message(51, "dc1-b"), "etherctl-failover 1 51 dc1-b standby");
}

}  // namespace
}  // namespace etherctl::failover
