// Byte-level packet builders for the BPF_PROG_TEST_RUN tests (independent of the BPF code).
#pragma once

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace etherctl::datapath::test {

using Bytes = std::vector<uint8_t>;
using Mac = std::array<uint8_t, 6>;

inline void put16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

inline void append(Bytes& b, const Bytes& more) { b.insert(b.end(), more.begin(), more.end()); }

// An Ethernet header, or a whole frame of `size` bytes whose payload is `fill`. Written byte by
// byte into a vector of its final size: GCC 12 at -O3 misjudges a vector grown from a 14-byte
// one (false -Warray-bounds on inserting a std::array, or on resizing it).
inline Bytes ether(const Mac& dst, const Mac& src, uint16_t type, size_t size = 14,
                   uint8_t fill = 0) {
  Bytes b(size < 14 ? 14 : size, fill);
  for (size_t i = 0; i < 6; ++i) {
    b[i] = dst[i];
    b[6 + i] = src[i];
  }
  b[12] = static_cast<uint8_t>(type >> 8);
  b[13] = static_cast<uint8_t>(type);
  return b;
}

inline std::array<uint8_t, 4> ip4(const char* text) {
  std::array<uint8_t, 4> a{};
  inet_pton(AF_INET, text, a.data());
  return a;
}

inline std::array<uint8_t, 16> ip6(const char* text) {
  std::array<uint8_t, 16> a{};
  inet_pton(AF_INET6, text, a.data());
  return a;
}

inline uint16_t checksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (n & 1) sum += p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// IPv4 header (no options) + payload. frag_field: flags and offset as on the wire.
inline Bytes ipv4(const char* src, const char* dst, uint8_t proto, const Bytes& payload,
                  uint16_t id = 1, uint16_t frag_field = 0) {
  Bytes h;
  h.push_back(0x45);
  h.push_back(0);
  put16(h, static_cast<uint16_t>(20 + payload.size()));
  put16(h, id);
  put16(h, frag_field);
  h.push_back(64);
  h.push_back(proto);
  put16(h, 0);
  auto s = ip4(src), d = ip4(dst);
  h.insert(h.end(), s.begin(), s.end());
  h.insert(h.end(), d.begin(), d.end());
  uint16_t c = checksum(h.data(), h.size());
  h[10] = static_cast<uint8_t>(c >> 8);
  h[11] = static_cast<uint8_t>(c);
  append(h, payload);
  return h;
}

inline Bytes ipv6(const char* src, const char* dst, uint8_t next, const Bytes& payload) {
  Bytes h = {0x60, 0, 0, 0};
  put16(h, static_cast<uint16_t>(payload.size()));
  h.push_back(next);
  h.push_back(64);
  // Byte by byte: GCC 12 at -O3 misjudges a range insert here (false -Wstringop-overflow).
  for (uint8_t b : ip6(src)) h.push_back(b);
  for (uint8_t b : ip6(dst)) h.push_back(b);
  append(h, payload);
  return h;
}

inline Bytes etherip(const Bytes& inner, uint16_t header = 0x3000) {
  Bytes b;
  put16(b, header);
  append(b, inner);
  return b;
}

// An inner Ethernet frame of exactly `size` bytes with a recognisable payload pattern.
inline Bytes inner_frame(size_t size, uint16_t type = 0x0800, uint8_t seed = 1) {
  Mac dst = {0x02, 0, 0, 0, 0, 0x02}, src = {0x02, 0, 0, 0, 0, 0x01};
  Bytes b = ether(dst, src, type);
  for (size_t i = b.size(); i < size; ++i) b.push_back(static_cast<uint8_t>(i * 7 + seed));
  return b;
}

}  // namespace etherctl::datapath::test
