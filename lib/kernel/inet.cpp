#include "kernel/inet.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <charconv>

namespace etherctl::kernel {

size_t IpPrefix::size() const { return family == AF_INET6 ? 16 : 4; }

std::optional<IpPrefix> parse_address(std::string_view text) {
  // inet_pton needs a NUL-terminated string; addresses are short, so a stack copy does.
  char buffer[INET6_ADDRSTRLEN + 1];
  if (text.empty() || text.size() >= sizeof(buffer)) return std::nullopt;
  text.copy(buffer, text.size());
  buffer[text.size()] = '\0';
  IpPrefix result;
  if (inet_pton(AF_INET, buffer, result.bytes.data()) == 1) {
    result.family = AF_INET;
    result.length = 32;
    return result;
  }
  if (inet_pton(AF_INET6, buffer, result.bytes.data()) == 1) {
    result.family = AF_INET6;
    result.length = 128;
    return result;
  }
  return std::nullopt;
}

std::optional<IpPrefix> parse_prefix(std::string_view text) {
  const size_t slash = text.find('/');
  auto result = parse_address(text.substr(0, slash));
  if (!result || slash == std::string_view::npos) return result;
  const std::string_view digits = text.substr(slash + 1);
  int length = -1;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), length);
  if (error != std::errc() || end != digits.data() + digits.size() || digits.empty()) {
    return std::nullopt;
  }
  if (length < 0 || length > result->length) return std::nullopt;
  result->length = length;
  return result;
}

IpPrefix network_of(IpPrefix prefix) {
  for (size_t i = 0; i < prefix.size(); ++i) {
    const int bits_left = prefix.length - static_cast<int>(i) * 8;
    if (bits_left >= 8) continue;
    prefix.bytes[i] &= bits_left <= 0 ? 0 : static_cast<uint8_t>(0xff << (8 - bits_left));
  }
  return prefix;
}

std::string format_address(int family, const void* bytes) {
  char buffer[INET6_ADDRSTRLEN];
  if (!inet_ntop(family, bytes, buffer, sizeof(buffer))) return "";
  return buffer;
}

std::string format_prefix(const IpPrefix& prefix) {
  std::string text = format_address(prefix.family, prefix.bytes.data());
  text += '/';
  text += std::to_string(prefix.length);
  return text;
}

std::optional<std::string> canonical_destination(std::string_view text) {
  auto prefix = parse_prefix(text);
  if (!prefix) return std::nullopt;
  return format_prefix(network_of(*prefix));
}

std::optional<std::string> canonical_address(std::string_view text) {
  auto prefix = parse_prefix(text);
  if (!prefix) return std::nullopt;
  return format_prefix(*prefix);
}

}  // namespace etherctl::kernel
