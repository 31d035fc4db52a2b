#include "failover/vrrp.hpp"

#include <cstring>

namespace etherctl::failover {

std::optional<Advert> parse_advert(const uint8_t* data, size_t size) {
  if (size < 20) return std::nullopt;
  if ((data[0] >> 4) != 4) return std::nullopt;
  const size_t header = static_cast<size_t>(data[0] & 0x0f) * 4;
  const size_t total = (static_cast<size_t>(data[2]) << 8) | data[3];
  if (header < 20 || total < header + 8 || total > size) return std::nullopt;
  if (data[9] != 112) return std::nullopt;
  // A fragment is not an advertisement (keepalived never fragments one).
  if (((data[6] & 0x3f) | data[7]) != 0) return std::nullopt;
  const uint8_t* vrrp = data + header;
  Advert advert;
  std::memcpy(&advert.source, data + 12, 4);
  advert.version = vrrp[0] >> 4;
  if ((vrrp[0] & 0x0f) != 1) return std::nullopt;  // type 1: ADVERTISEMENT
  advert.virtual_router_id = vrrp[1];
  advert.priority = vrrp[2];
  advert.address_count = vrrp[3];
  if (advert.version == 3) {
    advert.interval_centiseconds = ((vrrp[4] & 0x0f) << 8) | vrrp[5];
  } else if (advert.version == 2) {
    advert.interval_centiseconds = vrrp[5] * 100;
  } else {
    return std::nullopt;
  }
  if (advert.virtual_router_id == 0) return std::nullopt;
  return advert;
}

}  // namespace etherctl::failover
