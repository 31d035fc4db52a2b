// IP addresses and prefixes as the site model needs them: parsed strictly, printed canonically.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace etherctl::model {

struct IpAddress {
  int family = 0;  // 4 or 6 (not AF_INET/AF_INET6)
  std::array<uint8_t, 16> bytes{};

  static std::optional<IpAddress> parse(const std::string& text);
  std::string str() const;
  int max_prefix() const { return family == 4 ? 32 : 128; }
  bool operator==(const IpAddress&) const = default;
  bool operator<(const IpAddress& other) const {
    return family != other.family ? family < other.family : bytes < other.bytes;
  }
};

struct IpPrefix {
  IpAddress address;
  int length = 0;

  // "10.1.0.1/24"; the prefix length is required. Error text goes to *error.
  static std::optional<IpPrefix> parse(const std::string& text, std::string* error);
  std::string str() const;   // "10.1.0.1/24"
  IpPrefix network() const;  // host bits cleared
  bool contains(const IpAddress& a) const;
  bool operator==(const IpPrefix&) const = default;
};

}  // namespace etherctl::model
