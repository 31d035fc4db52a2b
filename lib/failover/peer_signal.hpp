// The agents' word to each other: "this unit has left the segments". keepalived's adverts say
// which unit is master, not whether the agent of the unit that just left MASTER has taken its
// ports out of the bridges yet (that takes it one netlink request, after a wake-up that can be
// late on a busy host). The unit taking over waits for this word before it joins the segments
// whenever the peer advertised recently (docs/failover.md, "Order across the pair").
//
// A UDP datagram to the peer's fixed self IP on the group's VLAN, port kPeerSignalPort:
// "etherctl-failover 1 <virtual router id> <sending device> standby". Like VRRP itself it is
// not authenticated: whoever can send on the group's VLAN can disturb the election anyway.
#pragma once

#include <cstdint>
#include <string>

namespace etherctl::failover {

inline constexpr uint16_t kPeerSignalPort = 3378;  // RFC 3378, EtherIP

class PeerSignal {
 public:
  // A UDP socket on kPeerSignalPort (any address, the calling thread's namespace) for the
  // group's virtual router; `device` is this unit, `peer` the other unit's name. Throws
  // std::system_error.
  PeerSignal(int virtual_router_id, std::string device, std::string peer);
  ~PeerSignal();
  PeerSignal(const PeerSignal&) = delete;
  PeerSignal& operator=(const PeerSignal&) = delete;

  int fd() const { return fd_; }
  // Tells the peer at `address` (IPv4, network order) that this unit is out of the segments.
  // Best effort: false when the datagram could not leave (no route, the VLAN is down).
  bool send_standby(uint32_t address);
  // How many "standby" words of the peer were waiting; never blocks. Other datagrams on the
  // port (another group, another version) are dropped.
  int read_standby();

 private:
  int virtual_router_id_;
  std::string device_;
  std::string peer_;
  int fd_ = -1;
};

// The message (also what read_standby() accepts from `device`).
std::string standby_message(int virtual_router_id, const std::string& device);

}  // namespace etherctl::failover
