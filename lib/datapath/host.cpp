#include "datapath/host.hpp"

#include <fmt/format.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "datapath/types.hpp"

namespace etherctl::datapath {

namespace {

class Socket {
 public:
  Socket() : fd_(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    if (fd_ < 0) throw DatapathError(errno, fmt::format("socket: {}", std::strerror(errno)));
  }
  ~Socket() { ::close(fd_); }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

ifreq request_for(const std::string& ifname) {
  if (ifname.size() >= IFNAMSIZ)
    throw DatapathError(EINVAL, fmt::format("interface name '{}' is too long", ifname));
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, ifname.data(), ifname.size());
  return ifr;
}

// One SIOCETHTOOL request; returns -errno instead of throwing when `quiet_errno` is that errno.
int ethtool(const Socket& sock, const std::string& ifname, void* data, const char* what,
            int quiet_errno = 0) {
  ifreq ifr = request_for(ifname);
  ifr.ifr_data = static_cast<char*>(data);
  int rc = ::ioctl(sock.fd(), SIOCETHTOOL, &ifr);
  if (rc < 0 && quiet_errno && errno == quiet_errno) return -errno;
  if (rc < 0)
    throw DatapathError(errno,
                        fmt::format("ethtool {} on {}: {}", what, ifname, std::strerror(errno)));
  return rc;
}

// The names of the link's features, in bit order.
std::vector<std::string> feature_names(const Socket& sock, const std::string& ifname) {
  // ethtool_sset_info ends in a flexible array: room for one count.
  alignas(ethtool_sset_info) uint8_t sset_buf[sizeof(ethtool_sset_info) + sizeof(uint32_t)] = {};
  auto* sset = reinterpret_cast<ethtool_sset_info*>(sset_buf);
  sset->cmd = ETHTOOL_GSSET_INFO;
  sset->sset_mask = 1ULL << ETH_SS_FEATURES;
  ethtool(sock, ifname, sset, "GSSET_INFO");
  if (!(sset->sset_mask & (1ULL << ETH_SS_FEATURES))) return {};
  const uint32_t n = sset->data[0];

  std::vector<uint8_t> strings(sizeof(ethtool_gstrings) + std::size_t{n} * ETH_GSTRING_LEN);
  auto* gs = reinterpret_cast<ethtool_gstrings*>(strings.data());
  gs->cmd = ETHTOOL_GSTRINGS;
  gs->string_set = ETH_SS_FEATURES;
  gs->len = n;
  ethtool(sock, ifname, gs, "GSTRINGS");
  std::vector<std::string> names;
  names.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    const char* name = reinterpret_cast<const char*>(gs->data + std::size_t{i} * ETH_GSTRING_LEN);
    names.emplace_back(name, strnlen(name, ETH_GSTRING_LEN));
  }
  return names;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Segmentation offloads: TSO, GSO and every tunnel or protocol variant of them.
bool segmentation(std::string_view name) {
  return starts_with(name, "tx-gso") || ends_with(name, "segmentation");
}

// The feature values the datapath needs on the bridge-port end T (nullopt: any). With
// `partial_checksums`, the generic transmit checksum offload: TCP and UDP frames then cross the
// tunnel with the checksum still to be filled in (CHECKSUM_PARTIAL), which the kernel or the
// underlay's NIC does after encapsulation (see partial_checksums_safe). Never the
// protocol-specific ones (IPv4/IPv6 TCP/UDP only, SCTP's CRC): those are promises about what
// the underlay's hardware parses.
std::optional<bool> port_feature(std::string_view name, bool partial_checksums) {
  if (name == "tx-checksum-ip-generic") return partial_checksums;
  if (segmentation(name) || starts_with(name, "tx-checksum")) return false;
  if (name == "rx-gro") return true;
  return std::nullopt;
}

FeatureWish port_features(bool partial_checksums) {
  return
      [partial_checksums](std::string_view name) { return port_feature(name, partial_checksums); };
}

// The feature values the datapath needs on eip-T.
std::optional<bool> eip_feature(std::string_view name) {
  if (segmentation(name) || name == "rx-gro") return false;
  return std::nullopt;
}

// The feature values the datapath needs on esp-T (like eip-T: no TSO, so that veth_xmit hands
// its packets to dec-T's NAPI) and on dec-T (GRO, which decrypts ESP).
std::optional<bool> esp_feature(std::string_view name) {
  if (segmentation(name)) return false;
  return std::nullopt;
}

std::optional<bool> dec_feature(std::string_view name) {
  if (name == "rx-gro") return true;
  return std::nullopt;
}

// One queue per CPU, as far as the pair has queues (a veth is created with one queue per
// possible CPU, of which one is in use unless asked otherwise).
uint32_t wanted_queues(uint32_t max) {
  uint32_t cpus = std::max(1u, std::thread::hardware_concurrency());
  return std::max(1u, std::min(cpus, max));
}

struct Sysctl {
  std::string prefix, ifname, leaf, value;
};

// The sysctls prepare_links writes, in order.
std::vector<Sysctl> sysctls(const std::string& tunnel, bool ipv6_outer, bool ipsec) {
  const std::string eip = eip_name(tunnel);
  // The outer packet enters the stack through eip's ingress with a local source address: it
  // must be forwarded, and not rejected as a martian or by reverse-path filtering.
  std::vector<Sysctl> out = {{"net/ipv4/conf", eip, "forwarding", "1"},
                             {"net/ipv4/conf", eip, "accept_local", "1"},
                             {"net/ipv4/conf", "all", "rp_filter", "0"},
                             {"net/ipv4/conf", eip, "rp_filter", "0"},
                             // The tunnel end is only ever a bridge port (self IPs live on
                             // VLANs and VLAN groups). Without IPv6 it sends nothing of its
                             // own across the WAN: no router solicitations (retried for ever,
                             // RFC 7559), MLD reports or DAD. On a pair's standby, which has
                             // no SA, each of those met the blocking policy and left a larval
                             // state for 30 s.
                             {"net/ipv6/conf", tunnel, "disable_ipv6", "1"}};
  if (ipv6_outer) {
    // No addresses of its own (they would chatter into the bridge); ip6_forward checks the
    // global forwarding switch, not the device's.
    out.push_back({"net/ipv6/conf", eip, "addr_gen_mode", "1"});
    out.push_back({"net/ipv6/conf", eip, "accept_ra", "0"});
    out.push_back({"net/ipv6/conf", eip, "disable_ipv6", "0"});
    out.push_back({"net/ipv6/conf", eip, "forwarding", "1"});
    out.push_back({"net/ipv6/conf", "all", "forwarding", "1"});
  } else {
    out.push_back({"net/ipv6/conf", eip, "disable_ipv6", "1"});
  }
  if (ipsec) {
    // Quiet (no IPv6 chatter on the pair); the decrypted packets of other SAs between the
    // tunnel's addresses reach the stack on dec-T with the peer as source: no reverse-path
    // filtering there.
    out.push_back({"net/ipv6/conf", esp_name(tunnel), "disable_ipv6", "1"});
    out.push_back({"net/ipv6/conf", dec_name(tunnel), "disable_ipv6", "1"});
    out.push_back({"net/ipv4/conf", dec_name(tunnel), "rp_filter", "0"});
  }
  return out;
}

std::string sysctl_path(const std::string& prefix, const std::string& ifname,
                        const std::string& leaf) {
  return "/proc/sys/" + prefix + "/" + (ifname.empty() ? "" : ifname + "/") + leaf;
}

// The kernel filters by max(conf/all/rp_filter, conf/<dev>/rp_filter), so a nonzero "all"
// (strict or loose: both reject the outer packet entering through eip, whose source is local)
// cannot be undone for eip alone. Moving the value from "all" into every interface and
// "default" keeps every other interface's effective filtering exactly as it was.
void free_rp_filter_of_all() {
  const std::string base = "/proc/sys/net/ipv4/conf/";
  int all = std::atoi(read_sysctl("net/ipv4/conf", "all", "rp_filter").c_str());
  if (all == 0) return;
  for (const auto& entry : std::filesystem::directory_iterator(base)) {
    std::string name = entry.path().filename();
    if (name == "all" || starts_with(name, kEipPrefix)) continue;  // tunnels' ends stay at 0
    if (std::atoi(read_sysctl("net/ipv4/conf", name, "rp_filter").c_str()) < all)
      write_sysctl("net/ipv4/conf", name, "rp_filter", std::to_string(all));
  }
  write_sysctl("net/ipv4/conf", "all", "rp_filter", "0");
}

void feature_drift(const std::string& ifname, const FeatureWish& want,
                   std::vector<std::string>& out) {
  for (const auto& [name, feature] : features(ifname)) {
    std::optional<bool> wanted = want(name);
    if (!wanted || feature.fixed || feature.active == *wanted) continue;
    out.push_back(fmt::format("{}: {} is {}, the datapath needs it {}", ifname, name,
                              feature.active ? "on" : "off", *wanted ? "on" : "off"));
  }
}

void queue_drift(const std::string& ifname, std::vector<std::string>& out) {
  auto q = queues(ifname);
  if (!q) return;
  const uint32_t rx = wanted_queues(q->max_rx), tx = wanted_queues(q->max_tx);
  if (q->rx != rx || q->tx != tx)
    out.push_back(fmt::format("{}: {} rx and {} tx queues, the datapath needs {} and {}", ifname,
                              q->rx, q->tx, rx, tx));
}

// Gives a link one queue per CPU; changes nothing when it has them (a change takes the carrier
// down and up).
void prepare_queues(const std::string& ifname) {
  auto q = queues(ifname);
  if (!q) return;
  const uint32_t rx = wanted_queues(q->max_rx), tx = wanted_queues(q->max_tx);
  if (q->rx != rx || q->tx != tx) set_queues(ifname, rx, tx);
}

}  // namespace

std::array<uint8_t, 6> hardware_address(const std::string& ifname) {
  Socket sock;
  ifreq ifr = request_for(ifname);
  if (::ioctl(sock.fd(), SIOCGIFHWADDR, &ifr) < 0)
    throw DatapathError(errno, fmt::format("MAC of {}: {}", ifname, std::strerror(errno)));
  std::array<uint8_t, 6> mac{};
  std::memcpy(mac.data(), ifr.ifr_hwaddr.sa_data, mac.size());
  return mac;
}

int interface_mtu(const std::string& ifname) {
  Socket sock;
  ifreq ifr = request_for(ifname);
  if (::ioctl(sock.fd(), SIOCGIFMTU, &ifr) < 0)
    throw DatapathError(errno, fmt::format("MTU of {}: {}", ifname, std::strerror(errno)));
  return ifr.ifr_mtu;
}

std::map<std::string, Feature> features(const std::string& ifname) {
  Socket sock;
  const std::vector<std::string> names = feature_names(sock, ifname);
  const uint32_t blocks = (static_cast<uint32_t>(names.size()) + 31) / 32;
  std::vector<uint8_t> reply(sizeof(ethtool_gfeatures) +
                             std::size_t{blocks} * sizeof(ethtool_get_features_block));
  auto* gf = reinterpret_cast<ethtool_gfeatures*>(reply.data());
  gf->cmd = ETHTOOL_GFEATURES;
  gf->size = blocks;
  ethtool(sock, ifname, gf, "GFEATURES");
  std::map<std::string, Feature> out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const ethtool_get_features_block& block = gf->features[i / 32];
    const uint32_t bit = 1u << (i % 32);
    out[names[i]] = {(block.active & bit) != 0, (block.available & bit) == 0};
  }
  return out;
}

void set_features(const std::string& ifname, const FeatureWish& want) {
  Socket sock;
  const std::vector<std::string> names = feature_names(sock, ifname);
  const uint32_t blocks = (static_cast<uint32_t>(names.size()) + 31) / 32;
  std::vector<uint8_t> request(sizeof(ethtool_sfeatures) +
                               std::size_t{blocks} * sizeof(ethtool_set_features_block));
  auto* sf = reinterpret_cast<ethtool_sfeatures*>(request.data());
  sf->cmd = ETHTOOL_SFEATURES;
  sf->size = blocks;
  for (std::size_t i = 0; i < names.size(); ++i) {
    std::optional<bool> wanted = want(names[i]);
    if (!wanted) continue;
    sf->features[i / 32].valid |= 1u << (i % 32);
    if (*wanted) sf->features[i / 32].requested |= 1u << (i % 32);
  }
  // Positive results (ETHTOOL_F_UNSUPPORTED, ...) mean fixed features stayed: not an error.
  ethtool(sock, ifname, sf, "SFEATURES");
}

std::optional<Queues> queues(const std::string& ifname) {
  Socket sock;
  ethtool_channels ch{};
  ch.cmd = ETHTOOL_GCHANNELS;
  if (ethtool(sock, ifname, &ch, "GCHANNELS", EOPNOTSUPP) < 0) return std::nullopt;
  return Queues{ch.rx_count, ch.tx_count, ch.max_rx, ch.max_tx};
}

void set_queues(const std::string& ifname, uint32_t rx, uint32_t tx) {
  Socket sock;
  ethtool_channels ch{};
  ch.cmd = ETHTOOL_GCHANNELS;
  ethtool(sock, ifname, &ch, "GCHANNELS");
  ch.cmd = ETHTOOL_SCHANNELS;
  ch.rx_count = rx;
  ch.tx_count = tx;
  ethtool(sock, ifname, &ch, "SCHANNELS");
}

void write_sysctl(const std::string& prefix, const std::string& ifname, const std::string& leaf,
                  const std::string& value) {
  std::string path = sysctl_path(prefix, ifname, leaf);
  std::ofstream out(path);
  out << value << '\n';
  out.flush();
  if (!out) throw DatapathError(EIO, fmt::format("writing {} to {}", value, path));
}

std::string read_sysctl(const std::string& prefix, const std::string& ifname,
                        const std::string& leaf) {
  std::ifstream in(sysctl_path(prefix, ifname, leaf));
  std::string value;
  in >> value;
  return value;
}

bool partial_checksums_safe(bool ipv6_outer, const std::vector<std::string>& underlays) {
  if (ipv6_outer) return false;
  for (const auto& underlay : underlays) {
    auto all = features(underlay);
    auto it = all.find("tx-checksum-ipv4");
    if (it != all.end() && it->second.active) return false;
  }
  return true;
}

void prepare_links(const std::string& tunnel, bool ipv6_outer,
                   const std::vector<std::string>& underlays, bool ipsec) {
  const std::string eip = eip_name(tunnel);
  set_features(tunnel, port_features(!ipsec && partial_checksums_safe(ipv6_outer, underlays)));
  set_features(eip, eip_feature);
  prepare_queues(tunnel);
  prepare_queues(eip);
  if (ipsec) {
    set_features(esp_name(tunnel), esp_feature);
    set_features(dec_name(tunnel), dec_feature);
    prepare_queues(esp_name(tunnel));
    prepare_queues(dec_name(tunnel));
  }
  free_rp_filter_of_all();
  for (const Sysctl& s : sysctls(tunnel, ipv6_outer, ipsec))
    write_sysctl(s.prefix, s.ifname, s.leaf, s.value);
}

std::vector<std::string> link_drift(const std::string& tunnel, bool ipv6_outer,
                                    const std::vector<std::string>& underlays, bool ipsec) {
  const std::string eip = eip_name(tunnel);
  std::vector<std::string> out;
  feature_drift(tunnel, port_features(!ipsec && partial_checksums_safe(ipv6_outer, underlays)),
                out);
  feature_drift(eip, eip_feature, out);
  queue_drift(tunnel, out);
  queue_drift(eip, out);
  if (ipsec) {
    feature_drift(esp_name(tunnel), esp_feature, out);
    feature_drift(dec_name(tunnel), dec_feature, out);
    queue_drift(esp_name(tunnel), out);
    queue_drift(dec_name(tunnel), out);
  }
  for (const Sysctl& s : sysctls(tunnel, ipv6_outer, ipsec)) {
    std::string value = read_sysctl(s.prefix, s.ifname, s.leaf);
    if (value != s.value)
      out.push_back(fmt::format("{}/{} is {}, the datapath needs {}",
                                s.ifname.empty() ? s.prefix : s.prefix + "/" + s.ifname, s.leaf,
                                value.empty() ? "unreadable" : value, s.value));
  }
  return out;
}

std::string esp_gro_missing() {
  std::error_code ec;
  if (std::filesystem::exists("/sys/module/esp4_offload", ec)) return "";
  utsname uts{};
  if (::uname(&uts) == 0) {
    std::ifstream builtin(std::string("/lib/modules/") + uts.release + "/modules.builtin");
    for (std::string line; std::getline(builtin, line);)
      if (ends_with(line, "/esp4_offload.ko")) return "";
  }
  return "the kernel module esp4_offload (ESP GRO, which decrypts what IPsec tunnels receive) "
         "is not loaded and could not be loaded: nothing is received (modprobe esp4_offload)";
}

void load_esp_gro() {
  if (esp_gro_missing().empty()) return;
  // What `ip link add ... type vlan` gets from the kernel's own request_module: nothing in
  // the xfrm code asks for esp4_offload unless a state is offloaded to hardware.
  pid_t pid = 0;
  char* const argv[] = {const_cast<char*>("modprobe"), const_cast<char*>("-q"),
                        const_cast<char*>("esp4_offload"), nullptr};
  int status = 0;
  if (::posix_spawnp(&pid, "modprobe", nullptr, nullptr, argv, environ) == 0)
    ::waitpid(pid, &status, 0);
}

}  // namespace etherctl::datapath
