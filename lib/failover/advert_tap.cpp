#include "failover/advert_tap.hpp"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace etherctl::failover {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

AdvertTap::AdvertTap(const std::string& interface, int virtual_router_id)
    : interface_(interface), virtual_router_id_(virtual_router_id) {
  fd_ = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd_ < 0) fail("packet socket on " + interface);
  // IPv4, protocol 112, our virtual router id (the byte after the VRRP version/type).
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_PROTOCOL)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 6),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 112, 0, 4),
      BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),  // X = IP header length
      BPF_STMT(BPF_LD | BPF_B | BPF_IND, 1),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(virtual_router_id), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0xffff),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  sock_fprog program{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
  sockaddr_ll address{};
  address.sll_family = AF_PACKET;
  address.sll_protocol = htons(ETH_P_ALL);
  address.sll_ifindex = static_cast<int>(if_nametoindex(interface.c_str()));
  if (setsockopt(fd_, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program) != 0 ||
      address.sll_ifindex == 0 ||
      bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const int error = errno;
    close(fd_);
    errno = error;
    fail("VRRP advertisement tap on " + interface);
  }
}

AdvertTap::~AdvertTap() {
  if (fd_ >= 0) close(fd_);
}

std::vector<SeenAdvert> AdvertTap::read() {
  std::vector<SeenAdvert> out;
  uint8_t buffer[2048];
  for (;;) {
    sockaddr_ll from{};
    socklen_t length = sizeof from;
    const ssize_t n =
        recvfrom(fd_, buffer, sizeof buffer, 0, reinterpret_cast<sockaddr*>(&from), &length);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      fail("read VRRP advertisements on " + interface_);
    }
    auto advert = parse_advert(buffer, static_cast<size_t>(n));
    if (!advert || advert->virtual_router_id != virtual_router_id_) continue;
    out.push_back({*advert, from.sll_pkttype == PACKET_OUTGOING, std::chrono::steady_clock::now()});
  }
  return out;
}

}  // namespace etherctl::failover
