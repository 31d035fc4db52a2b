#include "model/ip.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace etherctl::model {

// Families are stored as 4 and 6 (not AF_*) so the model has no socket headers in its API.
std::optional<IpAddress> IpAddress::parse(const std::string& text) {
  IpAddress a;
  if (inet_pton(AF_INET, text.c_str(), a.bytes.data()) == 1) {
    a.family = 4;
    return a;
  }
  if (inet_pton(AF_INET6, text.c_str(), a.bytes.data()) == 1) {
    a.family = 6;
    return a;
  }
  return std::nullopt;
}

std::string IpAddress::str() const {
  char buffer[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == 4 ? AF_INET : AF_INET6, bytes.data(), buffer, sizeof buffer);
  return buffer;
}

std::optional<IpPrefix> IpPrefix::parse(const std::string& text, std::string* error) {
  auto slash = text.find('/');
  if (slash == std::string::npos) {
    *error = "\"" + text + "\" has no prefix length (write it as address/length, e.g. 10.1.0.1/24)";
    return std::nullopt;
  }
  // Named, not a temporary: GCC 12 at -O3 misjudges `"literal" + std::string&&` (a false
  // -Wrestrict in the insert at the front).
  const std::string address_text = text.substr(0, slash);
  auto address = IpAddress::parse(address_text);
  if (!address) {
    *error = "\"" + address_text + "\" is not an IPv4 or IPv6 address";
    return std::nullopt;
  }
  std::string length_text = text.substr(slash + 1);
  if (length_text.empty() || length_text.size() > 3 ||
      length_text.find_first_not_of("0123456789") != std::string::npos) {
    *error = "prefix length \"" + length_text + "\" is not a number";
    return std::nullopt;
  }
  int length = std::stoi(length_text);
  if (length > address->max_prefix()) {
    *error = "prefix length " + length_text + " is out of range 0.." +
             std::to_string(address->max_prefix());
    return std::nullopt;
  }
  return IpPrefix{*address, length};
}

std::string IpPrefix::str() const { return address.str() + "/" + std::to_string(length); }

IpPrefix IpPrefix::network() const {
  IpPrefix n = *this;
  for (int bit = length; bit < address.max_prefix(); ++bit) {
    n.address.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  return n;
}

bool IpPrefix::contains(const IpAddress& a) const {
  if (a.family != address.family) return false;
  IpPrefix other{a, length};
  return other.network().address == network().address;
}

}  // namespace etherctl::model
