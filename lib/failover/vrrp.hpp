// VRRP advertisements as etherctl sees them on the wire (its own unit's and the peer's): pure
// parsing, no sockets.
#pragma once

#include <cstdint>
#include <optional>

namespace etherctl::failover {

// A VRRP advertisement (IP protocol 112) as a packet socket of type SOCK_DGRAM hands it over:
// the IPv4 header first. Anything else (another protocol, a truncated or malformed packet, a
// fragment) gives nullopt. The VRRP checksum is not verified: this is an observer's view of
// what was sent, keepalived itself drops corrupt adverts.
struct Advert {
  uint32_t source = 0;  // IPv4 source address, network byte order
  int version = 0;      // 2 or 3
  int virtual_router_id = 0;
  int priority = 0;               // 0: the sender leaves MASTER (resigns)
  int interval_centiseconds = 0;  // v3: max advert interval; v2: seconds * 100
  int address_count = 0;
};
std::optional<Advert> parse_advert(const uint8_t* data, size_t size);

}  // namespace etherctl::failover
