#include "failover/vrrp.hpp"

#include <charconv>
#include <cstring>

namespace etherctl::failover {

std::string to_string(VrrpState state) {
  switch (state) {
    case VrrpState::Unknown:
      return "unknown";
    case VrrpState::Backup:
      return "BACKUP";
    case VrrpState::Master:
      return "MASTER";
    case VrrpState::Fault:
      return "FAULT";
    case VrrpState::Stop:
      return "STOP";
  }
  return "unknown";
}

std::optional<NotifyLine> parse_notify_line(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  constexpr std::string_view kPrefix = "INSTANCE \"";
  if (line.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  line.remove_prefix(kPrefix.size());
  const size_t quote = line.find('"');
  if (quote == std::string_view::npos || quote == 0) return std::nullopt;
  NotifyLine out;
  out.instance = std::string(line.substr(0, quote));
  line.remove_prefix(quote + 1);
  if (line.empty() || line.front() != ' ') return std::nullopt;
  line.remove_prefix(1);
  const size_t space = line.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  const std::string_view state = line.substr(0, space);
  if (state == "MASTER") {
    out.state = VrrpState::Master;
  } else if (state == "BACKUP") {
    out.state = VrrpState::Backup;
  } else if (state == "FAULT") {
    out.state = VrrpState::Fault;
  } else if (state == "STOP") {
    out.state = VrrpState::Stop;
  } else {
    return std::nullopt;  // MASTER_RX_LOWER_PRI, *_PRIORITY, DELETED: not transitions
  }
  const std::string_view number = line.substr(space + 1);
  auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), out.priority);
  if (error != std::errc() || end != number.data() + number.size() || out.priority < 0 ||
      out.priority > 255) {
    return std::nullopt;
  }
  return out;
}

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
