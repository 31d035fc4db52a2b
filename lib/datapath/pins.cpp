#include "datapath/pins.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <optional>
#include <set>

#include "datapath/bpf/etherip_common.h"
#include "datapath/tc.hpp"

namespace etherctl::datapath {

namespace {

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

bool is_shared_map(std::string_view name) {
  return std::find(kPinnedMaps.begin(), kPinnedMaps.end(), name) != kPinnedMaps.end();
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

std::string pin_dir_for(const std::string& bpffs) {
  return fmt::format("{}/etherctl/{}", bpffs, netns_id());
}

uint32_t map_id(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

uint32_t pinned_map_id(const std::string& path) {
  Fd fd(bpf_obj_get(path.c_str()));
  return fd.get() >= 0 ? map_id(fd.get()) : 0;
}

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

}  // namespace etherctl::datapath
