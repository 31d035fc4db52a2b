#include "failover/peer_signal.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>
#include <system_error>

namespace etherctl::failover {

std::string standby_message(int virtual_router_id, const std::string& device) {
  return "etherctl-failover 1 " + std::to_string(virtual_router_id) + " " + device + " standby";
}

PeerSignal::PeerSignal(int virtual_router_id, std::string device, std::string peer)
    : virtual_router_id_(virtual_router_id), device_(std::move(device)), peer_(std::move(peer)) {
  fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "failover signal socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(kPeerSignalPort);
  if (bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const int error = errno;
    close(fd_);
    throw std::system_error(error, std::generic_category(),
                            "failover signal socket: UDP port " + std::to_string(kPeerSignalPort));
  }
}

PeerSignal::~PeerSignal() {
  if (fd_ >= 0) close(fd_);
}

bool PeerSignal::send_standby(uint32_t address) {
  const std::string message = standby_message(virtual_router_id_, device_);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(kPeerSignalPort);
  to.sin_addr.s_addr = address;
  return sendto(fd_, message.data(), message.size(), 0, reinterpret_cast<sockaddr*>(&to),
                sizeof to) == static_cast<ssize_t>(message.size());
}

int PeerSignal::read_standby() {
  const std::string expected = standby_message(virtual_router_id_, peer_);
  int count = 0;
  char buffer[256];
  for (;;) {
    const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EAGAIN: all read; ICMP errors of our own sends (ECONNREFUSED) are not words
    }
    if (std::string_view(buffer, static_cast<size_t>(n)) == expected) ++count;
  }
  return count;
}

}  // namespace etherctl::failover
