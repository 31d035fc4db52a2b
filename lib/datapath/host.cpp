#include "datapath/host.hpp"

#include <fmt/format.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <vector>

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

void ethtool(const Socket& sock, const std::string& ifname, void* data, const char* what) {
  ifreq ifr = request_for(ifname);
  ifr.ifr_data = static_cast<char*>(data);
  if (::ioctl(sock.fd(), SIOCETHTOOL, &ifr) < 0)
    throw DatapathError(errno,
                        fmt::format("ethtool {} on {}: {}", what, ifname, std::strerror(errno)));
}

bool offload_to_disable(std::string_view name) {
  auto ends_with = [&](std::string_view s) {
    return name.size() >= s.size() && name.substr(name.size() - s.size()) == s;
  };
  return name.substr(0, 11) == "tx-checksum" || name.substr(0, 6) == "tx-gso" ||
         ends_with("segmentation");
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

void disable_offloads(const std::string& ifname) {
  Socket sock;
  // Feature names come from the kernel, so the bit positions are never hard-coded.
  // ethtool_sset_info ends in a flexible array: room for one count.
  alignas(ethtool_sset_info) uint8_t sset_buf[sizeof(ethtool_sset_info) + sizeof(uint32_t)] = {};
  auto* sset = reinterpret_cast<ethtool_sset_info*>(sset_buf);
  sset->cmd = ETHTOOL_GSSET_INFO;
  sset->sset_mask = 1ULL << ETH_SS_FEATURES;
  ethtool(sock, ifname, sset, "GSSET_INFO");
  if (!(sset->sset_mask & (1ULL << ETH_SS_FEATURES))) return;
  uint32_t n = sset->data[0];

  std::vector<uint8_t> strings(sizeof(ethtool_gstrings) + n * ETH_GSTRING_LEN);
  auto* gs = reinterpret_cast<ethtool_gstrings*>(strings.data());
  gs->cmd = ETHTOOL_GSTRINGS;
  gs->string_set = ETH_SS_FEATURES;
  gs->len = n;
  ethtool(sock, ifname, gs, "GSTRINGS");

  uint32_t blocks = (n + 31) / 32;
  std::vector<uint8_t> request(sizeof(ethtool_sfeatures) +
                               blocks * sizeof(ethtool_set_features_block));
  auto* sf = reinterpret_cast<ethtool_sfeatures*>(request.data());
  sf->cmd = ETHTOOL_SFEATURES;
  sf->size = blocks;
  for (uint32_t i = 0; i < n; ++i) {
    const char* name = reinterpret_cast<const char*>(gs->data + i * ETH_GSTRING_LEN);
    if (offload_to_disable(std::string_view(name, strnlen(name, ETH_GSTRING_LEN))))
      sf->features[i / 32].valid |= 1u << (i % 32);  // requested bit stays 0: off
  }
  // Positive results (ETHTOOL_F_UNSUPPORTED, ...) mean fixed features stayed: not an error.
  ethtool(sock, ifname, sf, "SFEATURES");
}

void write_sysctl(const std::string& prefix, const std::string& ifname, const std::string& leaf,
                  const std::string& value) {
  std::string path = "/proc/sys/" + prefix + "/" + (ifname.empty() ? "" : ifname + "/") + leaf;
  std::ofstream out(path);
  out << value << '\n';
  out.flush();
  if (!out) throw DatapathError(EIO, fmt::format("writing {} to {}", value, path));
}

namespace {

std::string read_sysctl(const std::string& path) {
  std::ifstream in(path);
  std::string value;
  in >> value;
  return value;
}

// The kernel filters by max(conf/all/rp_filter, conf/<dev>/rp_filter), so a nonzero "all"
// (strict or loose: both reject the re-injected outer packet, whose source is local) cannot be
// undone for eip alone. Moving the value from "all" into every interface and "default" keeps
// every other interface's effective filtering exactly as it was.
void free_rp_filter_of_all() {
  const std::string base = "/proc/sys/net/ipv4/conf/";
  int all = std::atoi(read_sysctl(base + "all/rp_filter").c_str());
  if (all == 0) return;
  for (const auto& entry : std::filesystem::directory_iterator(base)) {
    std::string name = entry.path().filename();
    if (name == "all" || name.rfind("eip-", 0) == 0) continue;  // tunnels' ends stay at 0
    if (std::atoi(read_sysctl(base + name + "/rp_filter").c_str()) < all)
      write_sysctl("net/ipv4/conf", name, "rp_filter", std::to_string(all));
  }
  write_sysctl("net/ipv4/conf", "all", "rp_filter", "0");
}

}  // namespace

void prepare_links(const std::string& tunnel, bool ipv6_outer) {
  disable_offloads(tunnel);
  const std::string eip = eip_name(tunnel);
  // The outer packet re-enters the stack through eip's ingress with a local source address:
  // it must be forwarded, and not rejected as a martian or by reverse-path filtering.
  write_sysctl("net/ipv4/conf", eip, "forwarding", "1");
  write_sysctl("net/ipv4/conf", eip, "accept_local", "1");
  free_rp_filter_of_all();
  write_sysctl("net/ipv4/conf", eip, "rp_filter", "0");
  if (ipv6_outer) {
    // No addresses of its own (they would chatter into the bridge); ip6_forward checks the
    // global forwarding switch, not the device's.
    write_sysctl("net/ipv6/conf", eip, "addr_gen_mode", "1");
    write_sysctl("net/ipv6/conf", eip, "accept_ra", "0");
    write_sysctl("net/ipv6/conf", eip, "disable_ipv6", "0");
    write_sysctl("net/ipv6/conf", eip, "forwarding", "1");
    write_sysctl("net/ipv6/conf", "all", "forwarding", "1");
  } else {
    write_sysctl("net/ipv6/conf", eip, "disable_ipv6", "1");
  }
}

}  // namespace etherctl::datapath
