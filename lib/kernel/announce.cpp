#include "kernel/announce.hpp"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "kernel/netlink.hpp"

namespace etherctl::kernel {

namespace {

// A socket closed on every path.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

[[noreturn]] void fail(const std::string& what, const std::string& step) {
  const int error = errno;
  throw KernelError(error, "", what + ": " + step + ": " + std::strerror(error));
}

std::array<uint8_t, 6> mac_of(int fd, const std::string& interface, const std::string& what) {
  ifreq request{};
  std::strncpy(request.ifr_name, interface.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFHWADDR, &request) != 0) fail(what, "reading the MAC of " + interface);
  std::array<uint8_t, 6> mac{};
  std::memcpy(mac.data(), request.ifr_hwaddr.sa_data, mac.size());
  return mac;
}

// Gratuitous ARP as `arping -U` and keepalived send it: a broadcast request whose sender and
// target protocol addresses are both the address (RFC 5227's announcement).
void announce_v4(const std::string& interface, unsigned ifindex, const IpPrefix& address,
                 const std::string& what) {
  Fd fd(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP)));
  if (fd.get() < 0) fail(what, "packet socket");
  const auto mac = mac_of(fd.get(), interface, what);
  std::array<uint8_t, 28> arp{};
  const uint8_t header[8] = {0, 1, 0x08, 0x00, 6, 4, 0, 1};  // Ethernet, IPv4, request
  std::memcpy(arp.data(), header, sizeof header);
  std::memcpy(arp.data() + 8, mac.data(), 6);
  std::memcpy(arp.data() + 14, address.bytes.data(), 4);
  std::memcpy(arp.data() + 24, address.bytes.data(), 4);  // target hardware address stays zero
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = static_cast<int>(ifindex);
  to.sll_halen = 6;
  std::memset(to.sll_addr, 0xff, 6);
  if (sendto(fd.get(), arp.data(), arp.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) !=
      static_cast<ssize_t>(arp.size())) {
    fail(what, "sending a gratuitous ARP");
  }
}

bool forwards_ipv6(const std::string& interface) {
  std::ifstream in("/proc/sys/net/ipv6/conf/" + interface + "/forwarding");
  int value = 0;
  return in >> value && value == 1;
}

// Unsolicited Neighbor Advertisement (RFC 4861 7.2.6): to all nodes, Override set (replace
// cached entries), Router set when the interface forwards, with our link-layer address.
void announce_v6(const std::string& interface, unsigned ifindex, const IpPrefix& address,
                 const std::string& what) {
  Fd fd(socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6));
  if (fd.get() < 0) fail(what, "ICMPv6 socket");
  const auto mac = mac_of(fd.get(), interface, what);
  const int hops = 255;  // receivers drop Neighbor Discovery with any other hop limit
  if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops) != 0 ||
      setsockopt(fd.get(), IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof ifindex) != 0) {
    fail(what, "ICMPv6 socket options");
  }
  // Sent from the address itself; it may still be settling in, so bind it freely.
  const int freebind = 1;
  setsockopt(fd.get(), IPPROTO_IPV6, IPV6_FREEBIND, &freebind, sizeof freebind);
  sockaddr_in6 source{};
  source.sin6_family = AF_INET6;
  std::memcpy(&source.sin6_addr, address.bytes.data(), 16);
  if (IN6_IS_ADDR_LINKLOCAL(&source.sin6_addr)) source.sin6_scope_id = ifindex;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&source), sizeof source) != 0) {
    fail(what, "binding to the address");
  }
  struct {
    nd_neighbor_advert advert;
    nd_opt_hdr option;
    uint8_t mac[6];
  } __attribute__((packed)) packet{};
  packet.advert.nd_na_type = ND_NEIGHBOR_ADVERT;
  packet.advert.nd_na_flags_reserved =
      ND_NA_FLAG_OVERRIDE | (forwards_ipv6(interface) ? ND_NA_FLAG_ROUTER : 0);
  std::memcpy(&packet.advert.nd_na_target, address.bytes.data(), 16);
  packet.option.nd_opt_type = ND_OPT_TARGET_LINKADDR;
  packet.option.nd_opt_len = 1;  // in units of 8 bytes
  std::memcpy(packet.mac, mac.data(), 6);
  sockaddr_in6 to{};
  to.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "ff02::1", &to.sin6_addr);
  to.sin6_scope_id = ifindex;
  // The kernel fills in the ICMPv6 checksum of raw ICMPv6 sockets.
  if (sendto(fd.get(), &packet, sizeof packet, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) !=
      static_cast<ssize_t>(sizeof packet)) {
    fail(what, "sending an unsolicited neighbor advertisement");
  }
}

}  // namespace

void announce_address(const std::string& interface, const IpPrefix& address) {
  const std::string what =
      "announce " + format_address(address.family, address.bytes.data()) + " on " + interface;
  const unsigned ifindex = if_nametoindex(interface.c_str());
  if (ifindex == 0) fail(what, "interface " + interface);
  if (address.family == AF_INET) {
    announce_v4(interface, ifindex, address, what);
  } else {
    announce_v6(interface, ifindex, address, what);
  }
}

}  // namespace etherctl::kernel
