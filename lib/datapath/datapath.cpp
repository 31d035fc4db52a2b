#include "datapath/datapath.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <linux/capability.h>
#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "datapath/bpf/etherip_common.h"
#include "datapath/entries.hpp"
#include "datapath/host.hpp"
#include "datapath/pins.hpp"
#include "datapath/support.hpp"
#include "datapath/tc.hpp"
#include "etherip_bpf.skel.h"

namespace etherctl::datapath {

namespace {

struct SkeletonDeleter {
  void operator()(etherip_bpf* skel) const { etherip_bpf__destroy(skel); }
};
using Skeleton = std::unique_ptr<etherip_bpf, SkeletonDeleter>;

bool shared_map(const bpf_map* map) { return is_shared_map(bpf_map__name(map)); }

bool same_layout(const bpf_map* map, int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return false;
  return info.type == bpf_map__type(map) && info.key_size == bpf_map__key_size(map) &&
         info.value_size == bpf_map__value_size(map) &&
         info.max_entries == bpf_map__max_entries(map);
}

}  // namespace

struct Datapath::Impl {
  Skeleton skel;
  std::string pin_dir;
  Options options;

  int map_fd(const bpf_map* map) const { return bpf_map__fd(map); }
  int tunnels_fd() const { return map_fd(skel->maps.tunnels); }
  int peers_fd() const { return map_fd(skel->maps.peers); }
  int locals_fd() const { return map_fd(skel->maps.locals); }
  int stats_fd() const { return map_fd(skel->maps.stats); }
  int ports_fd() const { return map_fd(skel->maps.ports); }

  // The tunnel port's egress program (fast path at T): attached and mapped, or gone.
  void set_port_encap(const std::string& name, uint32_t key, bool on) {
    const unsigned port = if_nametoindex(name.c_str());
    if (port == 0) return;
    if (!on) {
      tc_detach(static_cast<int>(port), true, Side::Egress);
      bpf_map_delete_elem(ports_fd(), &port);
      return;
    }
    if (bpf_map_update_elem(ports_fd(), &port, &key, BPF_ANY) != 0)
      fail(errno, fmt::format("configuring tunnel {} port", name));
    tc_attach(static_cast<int>(port), bpf_program__fd(skel->progs.etherip_encap_port), name,
              Side::Egress);
  }

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

  std::optional<Counters> read_stats(uint32_t key) const { return read_counters(stats_fd(), key); }

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
    set_port_encap(std::string(value.name, strnlen(value.name, sizeof(value.name))), key, false);
    if (value.dec_ifindex) tc_detach(static_cast<int>(value.dec_ifindex));
    bpf_map_delete_elem(tunnels_fd(), &key);
    bpf_map_delete_elem(stats_fd(), &key);
  }
};

Datapath::Datapath(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Datapath::~Datapath() = default;
Datapath::Datapath(Datapath&&) noexcept = default;
Datapath& Datapath::operator=(Datapath&&) noexcept = default;

Datapath Datapath::open(const Options& options) {
  use_libbpf_log();
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
    std::map<std::string, Fd> recovered = shared_maps(impl->pin_dir);
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
  if (err) {
    // Without CAP_PERFMON (or CAP_SYS_ADMIN) the verifier checks the programs as untrusted
    // code: it refuses pointer arithmetic they need (EACCES) or, exploring speculative paths
    // too, gives up on their size (E2BIG, 6.18). Neither errno says what is missing.
    const std::string hint =
        has_effective_capability(CAP_PERFMON) || has_effective_capability(CAP_SYS_ADMIN)
            ? "an incompatible pinned map from another etherctl version must be removed first"
            : "the kernel's verifier accepts them only with CAP_PERFMON or CAP_SYS_ADMIN besides "
              "CAP_BPF, which this process lacks";
    fail(err,
         fmt::format("loading the EtherIP BPF programs (pins in {}; {})", impl->pin_dir, hint));
  }
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

  const bool ipsec = spec.ipsec_reqid != 0;
  if (ipsec && local.family != ETHERIP_FAMILY_V4)
    throw DatapathError(EINVAL, fmt::format("tunnel {}: IPsec needs IPv4 endpoints", spec.name));
  if (ipsec && spec.fast_path)
    throw DatapathError(EINVAL, fmt::format("tunnel {}: the fast path skips IPsec policies; it "
                                            "cannot be combined with IPsec",
                                            spec.name));
  const uint32_t esp = ipsec ? static_cast<uint32_t>(ifindex_of(esp_name(spec.name))) : 0;
  const uint32_t dec = ipsec ? static_cast<uint32_t>(ifindex_of(dec_name(spec.name))) : 0;

  prepare_links(spec.name, local.family == ETHERIP_FAMILY_V6, spec.underlay, ipsec);

  etherip_tunnel value{};
  std::memcpy(value.name, spec.name.data(), spec.name.size());
  value.eip_ifindex = key;
  value.family = local.family;
  value.flags = (spec.accept_reversed ? ETHERIP_FLAG_ACCEPT_REVERSED : 0) |
                (spec.fast_path ? ETHERIP_FLAG_FAST_PATH : 0) | (ipsec ? ETHERIP_FLAG_IPSEC : 0);
  std::memcpy(value.local, local.bytes.data(), 16);
  std::memcpy(value.remote, remote.bytes.data(), 16);
  auto mac = hardware_address(eip);
  std::memcpy(value.mac, mac.data(), 6);
  for (std::size_t i = 0; i < underlay.size(); ++i) value.underlay[i] = underlay[i];
  if (ipsec) {
    value.reqid = spec.ipsec_reqid;
    value.esp_ifindex = esp;
    value.dec_ifindex = dec;
    auto dec_mac = hardware_address(dec_name(spec.name));
    std::memcpy(value.dec_mac, dec_mac.data(), 6);
  }
  if (spec.clamp_tcp_mss) {
    int mtu = 0xffff;
    for (const auto& u : spec.underlay) mtu = std::min(mtu, interface_mtu(u));
    value.clamp_mtu = static_cast<uint16_t>(std::max(mtu - spec.esp_headroom, 1));
    value.esp_headroom = spec.esp_headroom;
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
    if (old.dec_ifindex && old.dec_ifindex != dec) tc_detach(static_cast<int>(old.dec_ifindex));
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
  if (ipsec) tc_attach(static_cast<int>(dec), decap_fd(), dec_name(spec.name));
  impl_->set_port_encap(spec.name, key, spec.fast_path && spec.port_encap);
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
int Datapath::encap_port_fd() const {
  return bpf_program__fd(impl_->skel->progs.etherip_encap_port);
}
int Datapath::decap_fd() const { return bpf_program__fd(impl_->skel->progs.etherip_decap); }

}  // namespace etherctl::datapath