// Text <-> binary for IP addresses and prefixes, in the one canonical form etherctl uses for
// keys and attributes: inet_ntop text, "/<length>" always present.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace etherctl::kernel {

struct IpPrefix {
  int family = 0;  // AF_INET / AF_INET6
  std::array<uint8_t, 16> bytes{};
  int length = 0;       // prefix length in bits
  size_t size() const;  // 4 or 16: the address length of the family
};

// Parses "addr/length" or a bare "addr" (full-length prefix). nullopt when not valid.
std::optional<IpPrefix> parse_prefix(std::string_view text);
// Parses a bare address ("10.0.0.1", "2001:db8::1"). nullopt when not valid.
std::optional<IpPrefix> parse_address(std::string_view text);
// The prefix with the host bits cleared (routes: 10.1.2.3/16 -> 10.1.0.0/16).
IpPrefix network_of(IpPrefix prefix);
// inet_ntop text of an address of the given family (4 or 16 bytes at `bytes`).
std::string format_address(int family, const void* bytes);
// "addr/length" with the address as given (self IPs keep their host bits).
std::string format_prefix(const IpPrefix& prefix);
// Canonical route destination ("10.1.0.0/16") or self-IP address ("10.1.2.3/16") text;
// nullopt when the text does not parse.
std::optional<std::string> canonical_destination(std::string_view text);
std::optional<std::string> canonical_address(std::string_view text);

}  // namespace etherctl::kernel
