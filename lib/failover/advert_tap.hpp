// The agent's window on the wire: a packet socket on the VRRP interface that sees every
// advertisement sent or received, this unit's own included (a hung keepalived stops sending
// them; a peer that advertises is master).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "failover/vrrp.hpp"

namespace etherctl::failover {

struct SeenAdvert {
  Advert advert;
  bool outgoing = false;  // sent by this host
  std::chrono::steady_clock::time_point at;
};

class AdvertTap {
 public:
  // A packet socket on `interface` (in the calling thread's namespace) that receives the VRRP
  // packets of virtual router `virtual_router_id`, in both directions: only ETH_P_ALL sockets
  // get copies of outgoing packets; a classic BPF filter keeps all other traffic out. Throws
  // std::system_error naming the interface.
  AdvertTap(const std::string& interface, int virtual_router_id);
  ~AdvertTap();
  AdvertTap(const AdvertTap&) = delete;
  AdvertTap& operator=(const AdvertTap&) = delete;

  int fd() const { return fd_; }
  const std::string& interface() const { return interface_; }
  // Every advertisement waiting; never blocks.
  std::vector<SeenAdvert> read();

 private:
  std::string interface_;
  int virtual_router_id_;
  int fd_ = -1;
};

}  // namespace etherctl::failover
