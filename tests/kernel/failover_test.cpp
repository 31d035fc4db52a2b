// lib/failover against the real keepalived (Debian's 2.2.7) in throwaway namespaces: the
// configuration etherctl renders passes `keepalived -t` and runs an election; the notify FIFO
// lines and the advertisements on the wire parse as keepalived and tshark say they should.
// Every keepalived runs under `ip netns exec` of a namespace this test made and checked.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "failover/keepalived.hpp"
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

// One keepalived in a namespace, with the rendered configuration; stopped (SIGTERM, then
// SIGKILL) when it goes out of scope, and killed by the kernel if this test process dies.
class Keepalived {
 public:
  // ready: write 0 to the agent ready file first, as the agent does once it runs.
  Keepalived(const std::string& netns, const std::string& dir, KeepalivedSettings settings,
             bool ready = true)
      : dir_(dir) {
    if (access(("/run/netns/" + netns).c_str(), F_OK) != 0) {
      throw std::runtime_error("no namespace " + netns + ": refusing to start keepalived");
    }
    settings.notify_fifo = dir + "/notify.fifo";
    settings.agent_ready_file = dir + "/agent-ready";
    if (ready) std::ofstream(settings.agent_ready_file) << "0\n";
    files_ = {dir + "/keepalived.conf", dir + "/keepalived.pid", dir + "/vrrp.pid"};
    std::ofstream(files_.config) << render_keepalived_conf(settings);
    if (mkfifo(settings.notify_fifo.c_str(), 0600) != 0) throw std::runtime_error("mkfifo");
    fifo_ = open(settings.notify_fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    std::vector<std::string> args = {"/usr/bin/ip", "netns", "exec", netns};
    for (auto& a : keepalived_argv(kKeepalived, files_)) args.push_back(a);
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      int log = open((dir + "/keepalived.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
      std::vector<char*> argv;
      argv.reserve(args.size() + 1);
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~Keepalived() {
    stop();
    if (fifo_ >= 0) close(fifo_);
  }
  Keepalived(const Keepalived&) = delete;
  Keepalived& operator=(const Keepalived&) = delete;

  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = 0;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

  // Waits for a transition to `state` on the FIFO; every line read is kept in lines().
  bool wait_for(VrrpState state, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      pollfd p{fifo_, POLLIN, 0};
      poll(&p, 1, 20);
      char buffer[4096];
      const ssize_t n = read(fifo_, buffer, sizeof buffer);
      if (n > 0) pending_.append(buffer, static_cast<size_t>(n));
      for (size_t eol; (eol = pending_.find('\n')) != std::string::npos;) {
        lines_.push_back(pending_.substr(0, eol));
        pending_.erase(0, eol + 1);
        auto line = parse_notify_line(lines_.back());
        if (line && line->state == state) return true;
      }
    }
    return false;
  }
  const std::vector<std::string>& lines() const { return lines_; }
  void set_ready(bool ready) const {
    // Replaced, as the agent does (keepalived watches it with inotify).
    std::ofstream(dir_ + "/agent-ready.tmp") << (ready ? "0\n" : "1\n");
    fs::rename(dir_ + "/agent-ready.tmp", dir_ + "/agent-ready");
  }
  std::string log() const { return read_file(dir_ + "/keepalived.log"); }
  pid_t vrrp_child() const {
    return static_cast<pid_t>(std::atoi(read_file(files_.vrrp_pid_file).c_str()));
  }

 private:
  std::string dir_;
  KeepalivedFiles files_;
  int fifo_ = -1;
  pid_t pid_ = 0;
  std::string pending_;
  std::vector<std::string> lines_;
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
    v.notify_fifo = dir.path + "/notify.fifo";
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

// A packet socket in the calling thread's namespace that sees every VRRP packet on `ifname`,
// outgoing ones included: only ETH_P_ALL sockets get copies of what the host sends (a socket
// bound to ETH_P_IP sees received packets only). A classic BPF filter keeps everything but
// IPv4 protocol 112 out of the socket.
int vrrp_socket(const std::string& ifname) {
  int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd < 0) throw std::runtime_error("packet socket");
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_PROTOCOL)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 3),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 112, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0xffff),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  sock_fprog program{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program) != 0) {
    throw std::runtime_error("SO_ATTACH_FILTER");
  }
  sockaddr_ll address{};
  address.sll_family = AF_PACKET;
  address.sll_protocol = htons(ETH_P_ALL);
  address.sll_ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    throw std::runtime_error("bind packet socket");
  }
  return fd;
}

std::vector<Advert> read_adverts(int fd, std::chrono::milliseconds during) {
  std::vector<Advert> adverts;
  const auto deadline = Clock::now() + during;
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, 10);
    uint8_t buffer[2048];
    ssize_t n;
    while ((n = recv(fd, buffer, sizeof buffer, 0)) > 0) {
      if (auto advert = parse_advert(buffer, static_cast<size_t>(n))) adverts.push_back(*advert);
    }
  }
  return adverts;
}

std::string address_text(uint32_t address) {
  char text[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &address, text, sizeof text);
  return text;
}

bool has_marker(const std::string& netns) {
  return run("ip -n " + netns + " -o addr show dev lo").find(" 169.254.0.51/32 ") !=
         std::string::npos;
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

TEST(Failover, ElectionWithTheRenderedConfiguration) {
  if (!have(kKeepalived)) GTEST_SKIP() << "no " << kKeepalived << " (Debian package keepalived)";
  TestNetns sw;  // then a, then b: the thread ends in b, where the sniffer runs
  TestNetns a;
  TestNetns b;
  wire_pair(sw, a, b);
  const int sniffer = vrrp_socket("wan");
  TempDir dir_a, dir_b;
  Keepalived ka(a.name(), dir_a.path, unit("dc1-a", 200, a.name()));
  Keepalived kb(b.name(), dir_b.path, unit("dc1-b", 100, b.name()));

  ASSERT_TRUE(ka.wait_for(VrrpState::Master)) << ka.log();
  ASSERT_TRUE(kb.wait_for(VrrpState::Backup)) << kb.log();
  EXPECT_EQ(ka.lines().back(), "INSTANCE \"dc1\" MASTER 200");
  EXPECT_TRUE(has_marker(a.name()));
  EXPECT_FALSE(has_marker(b.name()));
  // keepalived's VRRP process is in the namespace it was started in (net_namespace agrees).
  struct stat child {
  }, expected{};
  ASSERT_EQ(stat(("/proc/" + std::to_string(ka.vrrp_child()) + "/ns/net").c_str(), &child), 0);
  ASSERT_EQ(stat(("/run/netns/" + a.name()).c_str(), &expected), 0);
  EXPECT_EQ(child.st_ino, expected.st_ino);

  // The master advertises with what the configuration says (how often is the benchmark's
  // business: bench/failover.py).
  auto adverts = read_adverts(sniffer, std::chrono::milliseconds(1000));
  ASSERT_GE(adverts.size(), 3u);
  for (const auto& advert : adverts) {
    EXPECT_EQ(address_text(advert.source), "198.51.100.11");
    EXPECT_EQ(advert.version, 3);
    EXPECT_EQ(advert.virtual_router_id, 51);
    EXPECT_EQ(advert.priority, 200);
    EXPECT_EQ(advert.interval_centiseconds, 10);
    EXPECT_EQ(advert.address_count, 1);
  }

  // The master's link goes down: it reports FAULT, the backup takes over and advertises.
  run("ip -n " + a.name() + " link set wan down");
  ASSERT_TRUE(ka.wait_for(VrrpState::Fault)) << ka.log();
  ASSERT_TRUE(kb.wait_for(VrrpState::Master)) << kb.log();
  EXPECT_TRUE(has_marker(b.name()));
  EXPECT_FALSE(has_marker(a.name()));
  adverts = read_adverts(sniffer, std::chrono::milliseconds(300));
  ASSERT_FALSE(adverts.empty());
  EXPECT_EQ(address_text(adverts.back().source), "198.51.100.12");
  EXPECT_EQ(adverts.back().priority, 100);

  // It comes back and preempts (VRRP's default): the backup goes back to BACKUP.
  run("ip -n " + a.name() + " link set wan up");
  ASSERT_TRUE(ka.wait_for(VrrpState::Master)) << ka.log();
  ASSERT_TRUE(kb.wait_for(VrrpState::Backup)) << kb.log();

  // A shutdown resigns: STOP on the FIFO, a priority-0 advert on the wire.
  read_adverts(sniffer, std::chrono::milliseconds(50));
  ka.stop();
  EXPECT_TRUE(ka.wait_for(VrrpState::Stop, std::chrono::milliseconds(100))) << ka.log();
  bool resigned = false;
  for (const auto& advert : read_adverts(sniffer, std::chrono::milliseconds(500))) {
    if (address_text(advert.source) == "198.51.100.11" && advert.priority == 0) resigned = true;
  }
  EXPECT_TRUE(resigned);
  ASSERT_TRUE(kb.wait_for(VrrpState::Master)) << kb.log();
  close(sniffer);
}

TEST(Failover, AUnitWithoutItsAgentStaysOutOfTheElection) {
  if (!have(kKeepalived)) GTEST_SKIP() << "no " << kKeepalived << " (Debian package keepalived)";
  TestNetns sw;
  TestNetns a;
  TestNetns b;
  wire_pair(sw, a, b);
  const int sniffer = vrrp_socket("wan");
  TempDir dir_a, dir_b;
  // a, the higher priority, starts without a ready file: keepalived creates it holding 1.
  Keepalived ka(a.name(), dir_a.path, unit("dc1-a", 200, a.name()), false);
  Keepalived kb(b.name(), dir_b.path, unit("dc1-b", 100, b.name()));
  ASSERT_TRUE(ka.wait_for(VrrpState::Fault)) << ka.log();
  ASSERT_TRUE(kb.wait_for(VrrpState::Master)) << kb.log();
  EXPECT_EQ(read_file(dir_a.path + "/agent-ready"), "1\n");
  read_adverts(sniffer, std::chrono::milliseconds(50));
  for (const auto& advert : read_adverts(sniffer, std::chrono::milliseconds(500))) {
    EXPECT_EQ(address_text(advert.source), "198.51.100.12") << "a unit in FAULT is silent";
  }
  // Its agent is ready: it joins and preempts.
  ka.set_ready(true);
  ASSERT_TRUE(ka.wait_for(VrrpState::Master)) << ka.log();
  ASSERT_TRUE(kb.wait_for(VrrpState::Backup)) << kb.log();
  // Its agent stops: FAULT at once, with a priority-0 advert so that the peer takes over
  // after its skew time rather than the master down interval.
  read_adverts(sniffer, std::chrono::milliseconds(50));
  ka.set_ready(false);
  ASSERT_TRUE(ka.wait_for(VrrpState::Fault)) << ka.log();
  ASSERT_TRUE(kb.wait_for(VrrpState::Master)) << kb.log();
  bool resigned = false;
  for (const auto& advert : read_adverts(sniffer, std::chrono::milliseconds(300))) {
    if (address_text(advert.source) == "198.51.100.11" && advert.priority == 0) resigned = true;
  }
  EXPECT_TRUE(resigned);
  close(sniffer);
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
  const int sniffer = vrrp_socket("wan");
  Keepalived ka(a.name(), dir.path, settings);
  ASSERT_TRUE(ka.wait_for(VrrpState::Master)) << ka.log();
  // tshark captures in b (this thread's namespace) while the sniffer reads the same adverts.
  run(std::string(kTshark) + " -q -i wan -a duration:2 -f 'ip proto 112' -w " + pcap +
      " 2>/dev/null");
  auto adverts = read_adverts(sniffer, std::chrono::milliseconds(10));
  ASSERT_FALSE(adverts.empty());
  const std::string fields =
      run(std::string(kTshark) + " -n -r " + pcap +
          " -Y vrrp -T fields -E separator=' ' -e ip.src -e vrrp.version -e vrrp.virt_rtr_id "
          "-e vrrp.prio -e vrrp.short_adver_int -e vrrp.addr_count 2>/dev/null");
  std::istringstream lines(fields);
  std::string line;
  int decoded = 0;
  const Advert& ours = adverts.back();
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
  close(sniffer);
}

}  // namespace
}  // namespace etherctl::failover
