// Kernel change notifications for `etherctl watch`: an rtnetlink socket subscribed to links,
// addresses, routes, neighbours and the bridge FDB, read without blocking.
#pragma once

#include <libmnl/libmnl.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/ip.hpp"

namespace etherctl::agent {

enum class EventKind { Link, Address, Route, Neighbour, Fdb, Tc };
inline constexpr size_t kEventKinds = 6;
const char* event_kind_name(EventKind kind);

// What one read of the socket brought: counts per kind; of those, the ones that can mean
// drift of what etherctl owns (not link-local or host addresses, only etherctl's routes:
// IPv6 brings link-local addresses and their routes up seconds after a link, and they are
// nobody's configuration); the addresses of neighbour entries that changed (locating pool
// members only cares about theirs); and whether the kernel dropped notifications because the
// socket's buffer was full (then anything may have changed).
struct EventBatch {
  std::array<uint64_t, kEventKinds> counts{};
  std::array<uint64_t, kEventKinds> relevant{};
  std::vector<model::IpAddress> neighbours;
  // IPv4 host-scope addresses added (true) or removed (false), in order: keepalived's marker
  // address among them (lib/failover/marker.hpp).
  std::vector<std::pair<model::IpAddress, bool>> host_addresses;
  bool overrun = false;

  uint64_t count(EventKind kind) const { return counts[static_cast<size_t>(kind)]; }
  uint64_t relevant_count(EventKind kind) const { return relevant[static_cast<size_t>(kind)]; }
  uint64_t total() const;
};

class EventSocket {
 public:
  // Subscribes to `groups` (RTMGRP_* bits; the default: all of the above) in the calling
  // thread's network namespace. Throws std::system_error.
  explicit EventSocket(unsigned groups = kAllGroups);
  static const unsigned kAllGroups;
  ~EventSocket();
  EventSocket(const EventSocket&) = delete;
  EventSocket& operator=(const EventSocket&) = delete;

  int fd() const;
  // Reads every notification waiting on the socket; never blocks.
  EventBatch drain();

 private:
  mnl_socket* socket_ = nullptr;
  std::vector<char> buffer_;
};

}  // namespace etherctl::agent
