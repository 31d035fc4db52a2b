#include "datapath/datapath.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <linux/if_ether.h>
#include <linux/magic.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "datapath/bpf/etherip_common.h"
#include "datapath/host.hpp"
#include "etherip_bpf.skel.h"
#include "kernel/netlink.hpp"

namespace etherctl::datapath {

namespace {

constexpr std::string_view kEipPrefix = "eip-";

std::string errno_text(int error) { return std::strerror(error < 0 ? -error : error); }

[[noreturn]] void fail(int error, const std::string& what) {
  if (error < 0) error = -error;
  throw DatapathError(error, fmt::format("{}: {}", what, errno_text(error)));
}

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct SkeletonDeleter {
  void operator()(etherip_bpf* skel) const { etherip_bpf__destroy(skel); }
};
using Skeleton = std::unique_ptr<etherip_bpf, SkeletonDeleter>;

// The maps shared by every program instance of a namespace (the reassembly table too: pieces
// of one datagram may reach two instances during a re-apply); zeroes and scratch are private to
// each loaded instance.
bool shared_map(const bpf_map* map) {
  std::string_view name = bpf_map__name(map);
  return name == "tunnels" || name == "peers" || name == "locals" || name == "stats" ||
         name == "frag_buckets" || name == "frag_bufs";
}

void ensure_bpffs(const std::string& path) {
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) == 0 && fs.f_type == BPF_FS_MAGIC) return;
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  // Private mode: the pins are etherctl's business only.
  if (::mount("bpf", path.c_str(), "bpf", 0, "mode=0700") != 0)
    fail(errno, fmt::format("mounting bpffs on {}", path));
}

// Names the namespace's pin directory. The netns cookie (5.14+) is never reused within a boot,
// unlike an inode number, which a new namespace can inherit from a deleted one along with its
// stale pins; the inode is the fallback.
std::string netns_id() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);
    int rc = ::getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len);
    ::close(fd);
    if (rc == 0) return fmt::format("cookie-{}", cookie);
  }
  struct stat st {};
  if (::stat("/proc/self/ns/net", &st) != 0) fail(errno, "reading /proc/self/ns/net");
  return fmt::format("inode-{}", st.st_ino);
}

int ifindex_or_zero(const std::string& name) {
  return static_cast<int>(::if_nametoindex(name.c_str()));
}

int ifindex_of(const std::string& name) {
  int index = ifindex_or_zero(name);
  if (index == 0) fail(errno ? errno : ENODEV, fmt::format("interface {}", name));
  return index;
}

// libbpf prints the kernel's extended ack of every failed netlink request; queries and
// detaches that are expected to fail (no clsact yet, filter gone) run quietly.
thread_local bool libbpf_quiet = false;

int libbpf_print(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG || libbpf_quiet) return 0;
  return std::vfprintf(stderr, format, args);
}

struct Quiet {
  Quiet() { libbpf_quiet = true; }
  ~Quiet() { libbpf_quiet = false; }
  Quiet(const Quiet&) = delete;
  Quiet& operator=(const Quiet&) = delete;
};

bpf_tc_hook ingress_hook(int ifindex) {
  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = ifindex;
  hook.attach_point = BPF_TC_INGRESS;
  return hook;
}

bpf_tc_opts our_filter() {
  bpf_tc_opts opts{};
  opts.sz = sizeof(opts);
  opts.handle = kTcHandle;
  opts.priority = kTcPriority;
  return opts;
}

// clsact + cls_bpf direct-action (works on 6.1, unlike TCX links); REPLACE swaps the program
// of our filter atomically, so packets never see a gap during re-apply.
void tc_attach(int ifindex, int prog_fd, const std::string& ifname) {
  bpf_tc_hook hook = ingress_hook(ifindex);
  int err;
  {
    Quiet quiet;  // EEXIST is the normal case
    err = bpf_tc_hook_create(&hook);
  }
  if (err && err != -EEXIST) fail(err, fmt::format("creating clsact on {}", ifname));
  bpf_tc_opts opts = our_filter();
  opts.prog_fd = prog_fd;
  opts.flags = BPF_TC_F_REPLACE;
  err = bpf_tc_attach(&hook, &opts);
  if (err) fail(err, fmt::format("attaching EtherIP program to {}", ifname));
}

// Filters on one clsact side of a link (RTM_GETTFILTER dump).
std::size_t filter_count(kernel::Netlink& netlink, int ifindex, uint32_t side) {
  kernel::Message message(RTM_GETTFILTER, 0);
  auto* tcm = message.put_header<tcmsg>();
  tcm->tcm_family = AF_UNSPEC;
  tcm->tcm_ifindex = ifindex;
  tcm->tcm_parent = TC_H_MAKE(TC_H_CLSACT, side);
  std::size_t count = 0;
  netlink.dump(message, [&](const nlmsghdr* reply) {
    if (reply->nlmsg_type == RTM_NEWTFILTER) ++count;
  });
  return count;
}

// Detaches our filter. On an underlay (`tidy`), also removes the clsact qdisc once it holds no
// filter at all, so that destroy leaves the link as it found it; another tool's filters keep
// it alive.
void tc_detach(int ifindex, bool tidy = false) {
  if (ifindex <= 0) return;
  bpf_tc_hook hook = ingress_hook(ifindex);
  bpf_tc_opts opts = our_filter();
  Quiet quiet;
  int err = bpf_tc_detach(&hook, &opts);
  if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL)
    fail(err, fmt::format("detaching EtherIP program from ifindex {}", ifindex));
  if (!tidy) return;
  try {
    kernel::Netlink netlink;
    if (filter_count(netlink, ifindex, TC_H_MIN_INGRESS) == 0 &&
        filter_count(netlink, ifindex, TC_H_MIN_EGRESS) == 0) {
      hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      bpf_tc_hook_destroy(&hook);
    }
  } catch (const kernel::KernelError&) {
    // The link is gone or the dump failed: leaving an empty clsact is harmless.
  }
}

uint32_t attached_prog_id(int ifindex) {
  bpf_tc_hook hook = ingress_hook(ifindex);
  bpf_tc_opts opts = our_filter();
  Quiet quiet;
  if (bpf_tc_query(&hook, &opts) != 0) return 0;
  return opts.prog_id;
}

// Whether our filter on `ifname`'s ingress runs the program named `program`.
bool program_attached(const std::string& ifname, std::string_view program) {
  libbpf_set_print(libbpf_print);  // inspect() may run without open(): keep queries quiet
  const unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) return false;
  const uint32_t prog_id = attached_prog_id(static_cast<int>(ifindex));
  if (!prog_id) return false;
  Fd prog(bpf_prog_get_fd_by_id(prog_id));
  // Opening a program by id needs CAP_SYS_ADMIN; without it (CAP_NET_ADMIN, CAP_BPF and
  // CAP_PERFMON suffice for everything else) our filter, by its handle and priority, has to
  // do, or every apply would fail its verification.
  if (prog.get() < 0) return errno == EPERM;
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(prog.get(), &info, &len) != 0) return false;
  return std::string_view(info.name, strnlen(info.name, sizeof(info.name))) == program;
}

// Adds the maps of our program attached to ifindex, by name.
void collect_maps(int ifindex, std::map<std::string, Fd>& maps) {
  uint32_t prog_id = attached_prog_id(ifindex);
  if (!prog_id) return;
  Fd prog(bpf_prog_get_fd_by_id(prog_id));
  if (prog.get() < 0) return;
  uint32_t ids[16] = {};
  bpf_prog_info info{};
  info.nr_map_ids = 16;
  info.map_ids = reinterpret_cast<uint64_t>(ids);
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(prog.get(), &info, &len) != 0) return;
  for (uint32_t m = 0; m < info.nr_map_ids && m < 16; ++m) {
    Fd map(bpf_map_get_fd_by_id(ids[m]));
    if (map.get() < 0) continue;
    bpf_map_info minfo{};
    uint32_t mlen = sizeof(minfo);
    if (bpf_obj_get_info_by_fd(map.get(), &minfo, &mlen) != 0) continue;
    maps.emplace(minfo.name, std::move(map));
  }
}

// The shared maps of the programs already attached in this namespace: the encap program of
// an "eip-*" device holds `tunnels`, which lists the underlays whose decap program holds the
// rest.
std::map<std::string, Fd> recover_maps() {
  std::map<std::string, Fd> maps;
  struct if_nameindex* list = ::if_nameindex();
  if (!list) return maps;
  for (auto* i = list; i->if_index != 0 && !maps.count("tunnels"); ++i)
    if (std::string_view(i->if_name).substr(0, kEipPrefix.size()) == kEipPrefix)
      collect_maps(static_cast<int>(i->if_index), maps);
  ::if_freenameindex(list);
  auto tunnels = maps.find("tunnels");
  if (tunnels == maps.end()) return maps;
  uint32_t key = 0, next = 0;
  uint32_t* prev = nullptr;
  while (bpf_map_get_next_key(tunnels->second.get(), prev, &next) == 0 && !maps.count("peers")) {
    etherip_tunnel value{};
    if (bpf_map_lookup_elem(tunnels->second.get(), &next, &value) == 0)
      for (uint32_t u : value.underlay)
        if (u) collect_maps(static_cast<int>(u), maps);
    key = next;
    prev = &key;
  }
  return maps;
}

bool same_layout(const bpf_map* map, int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return false;
  return info.type == bpf_map__type(map) && info.key_size == bpf_map__key_size(map) &&
         info.value_size == bpf_map__value_size(map) &&
         info.max_entries == bpf_map__max_entries(map);
}

struct Address {
  uint32_t family = 0;  // ETHERIP_FAMILY_V4 / _V6
  std::array<uint8_t, 16> bytes{};
};

Address parse_address(const std::string& text) {
  Address a;
  if (::inet_pton(AF_INET, text.c_str(), a.bytes.data()) == 1) {
    a.family = ETHERIP_FAMILY_V4;
  } else if (::inet_pton(AF_INET6, text.c_str(), a.bytes.data()) == 1) {
    a.family = ETHERIP_FAMILY_V6;
  } else {
    throw DatapathError(EINVAL, fmt::format("'{}' is not an IPv4 or IPv6 address", text));
  }
  return a;
}

std::string format_address(uint32_t family, const uint8_t* bytes) {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family == ETHERIP_FAMILY_V4 ? AF_INET : AF_INET6, bytes, text, sizeof(text));
  return text;
}

std::string if_name(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (ifindex > 0 && ::if_indextoname(static_cast<unsigned>(ifindex), name)) return name;
  return {};
}

std::vector<std::pair<uint32_t, etherip_tunnel>> tunnel_entries(int tunnels_fd) {
  std::vector<std::pair<uint32_t, etherip_tunnel>> out;
  uint32_t key = 0, next = 0;
  uint32_t* prev = nullptr;
  while (bpf_map_get_next_key(tunnels_fd, prev, &next) == 0) {
    etherip_tunnel value{};
    if (bpf_map_lookup_elem(tunnels_fd, &next, &value) == 0) out.emplace_back(next, value);
    key = next;
    prev = &key;
  }
  return out;
}

std::optional<Counters> stats_of(int stats_fd, uint32_t key) {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) fail(cpus, "counting CPUs");
  std::vector<etherip_stats> per_cpu(static_cast<std::size_t>(cpus));
  if (bpf_map_lookup_elem(stats_fd, &key, per_cpu.data()) != 0) return std::nullopt;
  Counters c;
  for (const auto& s : per_cpu) {
    c.rx_packets += s.rx_packets;
    c.rx_bytes += s.rx_bytes;
    c.tx_packets += s.tx_packets;
    c.tx_bytes += s.tx_bytes;
    c.rx_fragments += s.rx_fragments;
    c.reassembled += s.reassembled;
    for (std::size_t i = 0; i < kDropReasons; ++i) c.drops[i] += s.drops[i];
  }
  return c;
}

TunnelSpec spec_of(const etherip_tunnel& v) {
  TunnelSpec spec;
  spec.name.assign(v.name, strnlen(v.name, sizeof(v.name)));
  spec.local = format_address(v.family, v.local);
  spec.remote = format_address(v.family, v.remote);
  for (uint32_t u : v.underlay)
    if (u) spec.underlay.push_back(if_name(static_cast<int>(u)));
  spec.accept_reversed = v.flags & ETHERIP_FLAG_ACCEPT_REVERSED;
  spec.fast_path = v.flags & ETHERIP_FLAG_FAST_PATH;
  spec.clamp_tcp_mss = v.clamp_mtu != 0;
  return spec;
}

std::string pin_dir_for(const std::string& bpffs) {
  return fmt::format("{}/etherctl/{}", bpffs, netns_id());
}

constexpr std::array<const char*, 6> kPinnedMaps = {"tunnels", "peers",        "locals",
                                                    "stats",   "frag_buckets", "frag_bufs"};
// Pins of earlier versions, removed with the directory.
constexpr std::array<const char*, 1> kLegacyPins = {"frags"};

uint32_t map_id(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

uint32_t pinned_map_id(const std::string& path) {
  Fd fd(bpf_obj_get(path.c_str()));
  return fd.get() >= 0 ? map_id(fd.get()) : 0;
}

// The eip device of a tunnels-map entry still exists under its name (not gone, not reused).
bool entry_alive(uint32_t key, const etherip_tunnel& value) {
  return if_name(static_cast<int>(key)) ==
         eip_name(std::string_view(value.name, strnlen(value.name, sizeof(value.name))));
}

// The namespace's shared maps, from the pins or else from the attached programs.
std::map<std::string, Fd> shared_maps(const std::string& dir) {
  std::map<std::string, Fd> maps;
  for (const char* name : kPinnedMaps) {
    Fd fd(bpf_obj_get((dir + "/" + name).c_str()));
    if (fd.get() >= 0) maps.emplace(name, std::move(fd));
  }
  if (!maps.count("tunnels")) {
    Quiet quiet;
    maps = recover_maps();
  }
  return maps;
}

// The map entries Datapath::apply() writes for this entry are all there
// (TunnelStatus::complete; the filters are TunnelStatus::attached).
bool entry_complete(uint32_t key, const etherip_tunnel& value, int peers_fd, int locals_fd) {
  if (!entry_alive(key, value) || peers_fd < 0 || locals_fd < 0) return false;
  etherip_peer_key pk{};
  pk.family = value.family;
  std::memcpy(pk.local, value.local, 16);
  std::memcpy(pk.remote, value.remote, 16);
  uint32_t owner = 0;
  if (bpf_map_lookup_elem(peers_fd, &pk, &owner) != 0 || owner != key) return false;
  etherip_addr_key ak{};
  ak.family = value.family;
  std::memcpy(ak.addr, value.local, 16);
  return bpf_map_lookup_elem(locals_fd, &ak, &owner) == 0;
}

// Map ids that some loaded BPF program references; nullopt when the programs cannot all be
// seen (listing and opening programs by id needs CAP_SYS_ADMIN): then no map may be taken for
// unused.
std::optional<std::set<uint32_t>> maps_in_use() {
  std::set<uint32_t> used;
  uint32_t id = 0;
  while (bpf_prog_get_next_id(id, &id) == 0) {
    Fd prog(bpf_prog_get_fd_by_id(id));
    if (prog.get() < 0) {
      if (errno == ENOENT) continue;  // unloaded meanwhile
      return std::nullopt;
    }
    uint32_t ids[64] = {};
    bpf_prog_info info{};
    info.nr_map_ids = 64;
    info.map_ids = reinterpret_cast<uint64_t>(ids);
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(prog.get(), &info, &len) != 0) return std::nullopt;
    for (uint32_t m = 0; m < info.nr_map_ids && m < 64; ++m) used.insert(ids[m]);
  }
  if (errno != ENOENT) return std::nullopt;  // the end of the list, or EPERM
  return used;
}

}  // namespace

void collect_orphaned_pins(const Options& options) {
  const std::filesystem::path root = options.bpffs + "/etherctl";
  const std::string own = pin_dir_for(options.bpffs);
  std::error_code ec;
  if (!std::filesystem::is_directory(root, ec)) return;
  std::optional<std::set<uint32_t>> used;
  bool scanned = false;
  for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
    if (entry.path() == own || !entry.is_directory(ec)) continue;
    Fd tunnels(bpf_obj_get((entry.path() / "tunnels").c_str()));
    if (tunnels.get() >= 0) {
      bpf_map_info info{};
      uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(tunnels.get(), &info, &len) != 0) continue;
      if (!scanned) used = maps_in_use(), scanned = true;
      // Still used by some program: a live namespace's datapath (or one being set up). Without
      // the full list of programs (no CAP_SYS_ADMIN), every other namespace's pins used to
      // look orphaned and were removed, live ones included: collect nothing then.
      if (!used || used->count(info.id)) continue;
    }
    // No program uses these maps any more: their namespace is gone (its links, filters and
    // programs went with it) and only the pins kept the maps alive.
    for (const char* name : kPinnedMaps) ::unlink((entry.path() / name).c_str());
    for (const char* name : kLegacyPins) ::unlink((entry.path() / name).c_str());
    ::rmdir(entry.path().c_str());
  }
}

std::vector<TunnelStatus> inspect(const Options& options) {
  auto maps = shared_maps(pin_dir_for(options.bpffs));
  auto fd = [&](const char* name) {
    auto it = maps.find(name);
    return it == maps.end() ? -1 : it->second.get();
  };
  if (fd("tunnels") < 0 || fd("stats") < 0) return {};
  std::vector<TunnelStatus> out;
  Quiet quiet;  // queries of filters that are not there are expected
  for (auto& [key, value] : tunnel_entries(fd("tunnels"))) {
    TunnelSpec spec = spec_of(value);
    bool attached = program_attached(eip_name(spec.name), "etherip_encap");
    for (const auto& underlay : spec.underlay)
      attached = attached && program_attached(underlay, "etherip_decap");
    out.push_back({spec, stats_of(fd("stats"), key).value_or(Counters{}), attached,
                   entry_complete(key, value, fd("peers"), fd("locals"))});
  }
  return out;
}

bool needs_pruning(const Options& options) {
  const std::string dir = pin_dir_for(options.bpffs);
  auto maps = shared_maps(dir);
  auto tunnels = maps.find("tunnels");
  if (tunnels == maps.end()) {
    std::error_code ec;
    return std::filesystem::exists(dir, ec);  // pins (some) without the tunnels map
  }
  auto entries = tunnel_entries(tunnels->second.get());
  for (auto& [key, value] : entries)
    if (!entry_alive(key, value)) return true;
  std::error_code ec;
  return entries.empty() && std::filesystem::exists(dir, ec);
}

DatapathError::DatapathError(int error, const std::string& what)
    : std::runtime_error(what), error_(error) {}

std::string eip_name(std::string_view tunnel) {
  return std::string(kEipPrefix) + std::string(tunnel);
}

std::string_view drop_name(Drop reason) {
  static constexpr std::array<std::string_view, kDropReasons> names = {
      "truncated",   "bad_ip_header", "bad_version",   "reversed_header", "unknown_peer",
      "wrong_local", "frag_overlap",  "frag_timeout",  "frag_oversize",   "frag_malformed",
      "no_tunnel",   "gso",           "helper_failed", "frag_evicted"};
  auto i = static_cast<std::size_t>(reason);
  return i < names.size() ? names[i] : "unknown";
}

uint64_t Counters::total_drops() const {
  uint64_t sum = 0;
  for (uint64_t d : drops) sum += d;
  return sum;
}

static_assert(kDropReasons == ETHERIP_DROP_MAX, "Drop must mirror enum etherip_drop");
static_assert(kMaxTunnelMtu + ETH_HLEN + 8 + 2 <= ETHERIP_FRAG_MAX,
              "a double-tagged frame of the largest tunnel MTU must fit a reassembled datagram");
static_assert(ETHERIP_FRAG6_MAX_PIECES * ((1280 - 40 - 8) & ~7) >= ETHERIP_FRAG_MAX,
              "the IPv6 send path must cut the largest datagram for a 1280-byte path");

struct Datapath::Impl {
  Skeleton skel;
  std::string pin_dir;
  Options options;

  int map_fd(const bpf_map* map) const { return bpf_map__fd(map); }
  int tunnels_fd() const { return map_fd(skel->maps.tunnels); }
  int peers_fd() const { return map_fd(skel->maps.peers); }
  int locals_fd() const { return map_fd(skel->maps.locals); }
  int stats_fd() const { return map_fd(skel->maps.stats); }

  // (key, value) of every configured tunnel.
  std::vector<std::pair<uint32_t, etherip_tunnel>> entries() const {
    return tunnel_entries(tunnels_fd());
  }

  std::optional<std::pair<uint32_t, etherip_tunnel>> find(std::string_view name) const {
    for (auto& [key, value] : entries())
      if (std::string_view(value.name, strnlen(value.name, sizeof(value.name))) == name)
        return std::make_pair(key, value);
    return std::nullopt;
  }

  void ensure_pinned() {
    std::error_code ec;
    std::filesystem::create_directories(pin_dir, ec);
    bpf_map* map;
    bpf_object__for_each_map(map, skel->obj) {
      if (!shared_map(map)) continue;
      std::string path = pin_dir + "/" + bpf_map__name(map);
      if (::access(path.c_str(), F_OK) == 0) {
        // Ours already, or a stale pin (a run killed while pinning, whose next run found no
        // `tunnels` pin and made new maps): replace it, so pins and programs agree.
        if (pinned_map_id(path) == map_id(bpf_map__fd(map))) continue;
        ::unlink(path.c_str());
      }
      int err = bpf_map__pin(map, path.c_str());
      if (err) fail(err, fmt::format("pinning {}", path));
    }
  }

  void unpin_all() {
    bpf_map* map;
    bpf_object__for_each_map(map, skel->obj) {
      if (!shared_map(map)) continue;
      bpf_map__unpin(map, (pin_dir + "/" + bpf_map__name(map)).c_str());
    }
    for (const char* name : kLegacyPins) ::unlink((pin_dir + "/" + name).c_str());
    ::rmdir(pin_dir.c_str());
  }

  void ensure_stats(uint32_t key) {
    int cpus = libbpf_num_possible_cpus();
    if (cpus <= 0) fail(cpus, "counting CPUs");
    std::vector<etherip_stats> zero(static_cast<std::size_t>(cpus));
    int err = bpf_map_update_elem(stats_fd(), &key, zero.data(), BPF_NOEXIST);
    if (err && err != -EEXIST) fail(err, "creating tunnel counters");
  }

  std::optional<Counters> read_stats(uint32_t key) const { return stats_of(stats_fd(), key); }

  // Underlay ifindexes that carry decap for tunnels other than `except`.
  std::set<uint32_t> underlays_in_use(uint32_t except) const {
    std::set<uint32_t> used;
    for (auto& [key, value] : entries()) {
      if (key == except) continue;
      for (uint32_t u : value.underlay)
        if (u) used.insert(u);
    }
    return used;
  }

  // Deletes the peer and local-address entries that point at this tunnel.
  void drop_endpoints(uint32_t key, const etherip_tunnel& value) {
    etherip_peer_key pk{};
    pk.family = value.family;
    std::memcpy(pk.local, value.local, 16);
    std::memcpy(pk.remote, value.remote, 16);
    uint32_t owner = 0;
    if (bpf_map_lookup_elem(peers_fd(), &pk, &owner) == 0 && owner == key)
      bpf_map_delete_elem(peers_fd(), &pk);
    etherip_addr_key ak{};
    ak.family = value.family;
    std::memcpy(ak.addr, value.local, 16);
    if (bpf_map_lookup_elem(locals_fd(), &ak, &owner) == 0 && owner == key) {
      bpf_map_delete_elem(locals_fd(), &ak);
      // Another tunnel with the same local address takes over the attribution.
      for (auto& [other, ov] : entries())
        if (other != key && ov.family == value.family &&
            std::memcmp(ov.local, value.local, 16) == 0) {
          bpf_map_update_elem(locals_fd(), &ak, &other, BPF_ANY);
          break;
        }
    }
  }

  // Deletes the map entries of one tunnel and detaches what no other tunnel needs.
  void forget(uint32_t key, const etherip_tunnel& value) {
    drop_endpoints(key, value);
    auto used = underlays_in_use(key);
    for (uint32_t u : value.underlay)
      if (u && !used.count(u)) tc_detach(static_cast<int>(u), true);
    tc_detach(static_cast<int>(value.eip_ifindex));
    bpf_map_delete_elem(tunnels_fd(), &key);
    bpf_map_delete_elem(stats_fd(), &key);
  }
};

Datapath::Datapath(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Datapath::~Datapath() = default;
Datapath::Datapath(Datapath&&) noexcept = default;
Datapath& Datapath::operator=(Datapath&&) noexcept = default;

Datapath Datapath::open(const Options& options) {
  libbpf_set_print(libbpf_print);
  ensure_bpffs(options.bpffs);
  auto impl = std::make_unique<Impl>();
  // Network namespaces share the bpffs mount: one directory per namespace.
  impl->pin_dir = pin_dir_for(options.bpffs);

  bpf_object_open_opts opts{};
  opts.sz = sizeof(opts);
  impl->skel.reset(etherip_bpf__open_opts(&opts));
  if (!impl->skel) fail(errno, "opening the EtherIP BPF object");

  {
    // The namespace's existing maps: pinned, or (an `ip netns exec` run whose private bpffs is
    // gone) those of the programs already attached, so that old and new programs share state.
    std::map<std::string, Fd> recovered;
    for (const char* name : kPinnedMaps) {
      Fd fd(bpf_obj_get((impl->pin_dir + "/" + name).c_str()));
      if (fd.get() >= 0) recovered.emplace(name, std::move(fd));
    }
    if (!recovered.count("tunnels")) recovered = recover_maps();
    bpf_map* map;
    bpf_object__for_each_map(map, impl->skel->obj) {
      if (!shared_map(map)) continue;
      auto it = recovered.find(bpf_map__name(map));
      if (it == recovered.end()) continue;
      if (!same_layout(map, it->second.get()))
        throw DatapathError(EINVAL, fmt::format("attached EtherIP map '{}' has another layout "
                                                "(another etherctl version?); destroy first",
                                                bpf_map__name(map)));
      int err = bpf_map__reuse_fd(map, it->second.get());
      if (err) fail(err, fmt::format("reusing map {}", bpf_map__name(map)));
    }
  }

  int err = etherip_bpf__load(impl->skel.get());
  if (err)
    fail(err, fmt::format("loading the EtherIP BPF programs (pins in {}; an incompatible pinned "
                          "map from another etherctl version must be removed first)",
                          impl->pin_dir));
  // Pins appear with the first tunnel (apply), so that opening leaves nothing behind.
  impl->ensure_stats(ETHERIP_UNATTRIBUTED);
  impl->options = options;
  return Datapath(std::move(impl));
}

void Datapath::apply(const TunnelSpec& spec) {
  if (spec.name.empty() || spec.name.size() > kMaxTunnelName)
    throw DatapathError(
        EINVAL, fmt::format("tunnel name '{}' must have 1 to {} bytes", spec.name, kMaxTunnelName));
  if (spec.underlay.size() > ETHERIP_MAX_UNDERLAY)
    throw DatapathError(EINVAL, fmt::format("tunnel {}: at most {} underlay interfaces", spec.name,
                                            ETHERIP_MAX_UNDERLAY));
  Address local = parse_address(spec.local);
  Address remote = parse_address(spec.remote);
  if (local.family != remote.family)
    throw DatapathError(EINVAL, fmt::format("tunnel {}: local {} and remote {} differ in family",
                                            spec.name, spec.local, spec.remote));
  const std::string eip = eip_name(spec.name);
  ifindex_of(spec.name);
  const uint32_t key = static_cast<uint32_t>(ifindex_of(eip));
  std::vector<uint32_t> underlay;
  for (const auto& u : spec.underlay) underlay.push_back(static_cast<uint32_t>(ifindex_of(u)));

  prepare_links(spec.name, local.family == ETHERIP_FAMILY_V6);

  etherip_tunnel value{};
  std::memcpy(value.name, spec.name.data(), spec.name.size());
  value.eip_ifindex = key;
  value.family = local.family;
  value.flags = (spec.accept_reversed ? ETHERIP_FLAG_ACCEPT_REVERSED : 0) |
                (spec.fast_path ? ETHERIP_FLAG_FAST_PATH : 0);
  std::memcpy(value.local, local.bytes.data(), 16);
  std::memcpy(value.remote, remote.bytes.data(), 16);
  auto mac = hardware_address(eip);
  std::memcpy(value.mac, mac.data(), 6);
  for (std::size_t i = 0; i < underlay.size(); ++i) value.underlay[i] = underlay[i];
  if (spec.clamp_tcp_mss) {
    int mtu = 0xffff;
    for (const auto& u : spec.underlay) mtu = std::min(mtu, interface_mtu(u));
    value.clamp_mtu = static_cast<uint16_t>(mtu);
  }

  impl_->ensure_pinned();
  collect_orphaned_pins(impl_->options);
  for (auto& [old_key, old] : impl_->entries()) {
    bool same_name = std::string_view(old.name, strnlen(old.name, sizeof(old.name))) == spec.name;
    if (old_key != key) {
      // The veth pair was recreated under a new ifindex: the old entry is dead.
      if (same_name) impl_->forget(old_key, old);
      continue;
    }
    // Re-apply: keep the IPv4 id sequence, drop endpoints and underlays that changed. The
    // filters that stay are replaced in place below.
    value.ip_id = old.ip_id;
    impl_->drop_endpoints(key, old);
    auto used = impl_->underlays_in_use(key);
    for (uint32_t u : old.underlay)
      if (u && !used.count(u) && std::find(underlay.begin(), underlay.end(), u) == underlay.end())
        tc_detach(static_cast<int>(u), true);
  }

  etherip_peer_key pk{};
  pk.family = local.family;
  std::memcpy(pk.local, local.bytes.data(), 16);
  std::memcpy(pk.remote, remote.bytes.data(), 16);
  uint32_t owner = 0;
  etherip_tunnel other{};
  if (bpf_map_lookup_elem(impl_->peers_fd(), &pk, &owner) == 0 && owner != key &&
      bpf_map_lookup_elem(impl_->tunnels_fd(), &owner, &other) == 0)
    throw DatapathError(EEXIST, fmt::format("tunnel {}: endpoints {} -> {} already belong to "
                                            "tunnel {}",
                                            spec.name, spec.local, spec.remote,
                                            std::string(other.name, strnlen(other.name, 16))));
  // Configuration first, so that the programs find it as soon as they run.
  if (bpf_map_update_elem(impl_->tunnels_fd(), &key, &value, BPF_ANY) != 0)
    fail(errno, fmt::format("configuring tunnel {}", spec.name));
  impl_->ensure_stats(key);
  if (bpf_map_update_elem(impl_->peers_fd(), &pk, &key, BPF_ANY) != 0)
    fail(errno, fmt::format("configuring tunnel {} peer", spec.name));
  etherip_addr_key ak{};
  ak.family = local.family;
  std::memcpy(ak.addr, local.bytes.data(), 16);
  if (bpf_map_update_elem(impl_->locals_fd(), &ak, &key, BPF_NOEXIST) != 0 && errno != EEXIST)
    fail(errno, fmt::format("configuring tunnel {} local address", spec.name));

  tc_attach(static_cast<int>(key), encap_fd(), eip);
  for (std::size_t i = 0; i < underlay.size(); ++i)
    tc_attach(static_cast<int>(underlay[i]), decap_fd(), spec.underlay[i]);
}

void Datapath::remove(std::string_view name) {
  if (auto entry = impl_->find(name)) impl_->forget(entry->first, entry->second);
  // Also when the tunnel had no entry: a run killed between pinning and configuring left pins.
  if (impl_->entries().empty()) impl_->unpin_all();
}

std::vector<std::string> Datapath::prune() {
  std::vector<std::string> repaired;
  for (auto& [key, value] : impl_->entries()) {
    if (entry_alive(key, value)) continue;
    impl_->forget(key, value);
    std::string name(value.name, strnlen(value.name, sizeof(value.name)));
    repaired.push_back(fmt::format(
        "datapath: forgot tunnel {} and detached its programs (its interface {} is gone)", name,
        eip_name(name)));
  }
  std::error_code ec;
  if (impl_->entries().empty() && std::filesystem::exists(impl_->pin_dir, ec)) {
    impl_->unpin_all();
    repaired.push_back(fmt::format("datapath: unpinned {} (no tunnel left)", impl_->pin_dir));
  }
  return repaired;
}

void Datapath::remove_all() {
  for (auto& [key, value] : impl_->entries()) impl_->forget(key, value);
  impl_->unpin_all();
}

std::vector<TunnelSpec> Datapath::tunnels() const {
  std::vector<TunnelSpec> out;
  for (auto& [key, value] : impl_->entries()) out.push_back(spec_of(value));
  return out;
}

std::optional<Counters> Datapath::counters(std::string_view name) const {
  auto entry = impl_->find(name);
  if (!entry) return std::nullopt;
  return impl_->read_stats(entry->first);
}

Counters Datapath::unattributed() const {
  return impl_->read_stats(ETHERIP_UNATTRIBUTED).value_or(Counters{});
}

const std::string& Datapath::pin_dir() const { return impl_->pin_dir; }
int Datapath::encap_fd() const { return bpf_program__fd(impl_->skel->progs.etherip_encap); }
int Datapath::decap_fd() const { return bpf_program__fd(impl_->skel->progs.etherip_decap); }

}  // namespace etherctl::datapath
