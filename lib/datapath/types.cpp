#include "datapath/types.hpp"

#include <linux/if_ether.h>

#include "datapath/bpf/etherip_common.h"

namespace etherctl::datapath {

DatapathError::DatapathError(int error, const std::string& what)
    : std::runtime_error(what), error_(error) {}

std::string eip_name(std::string_view tunnel) {
  return std::string(kEipPrefix) + std::string(tunnel);
}

std::string esp_name(std::string_view tunnel) {
  return std::string(kEspPrefix) + std::string(tunnel);
}

std::string dec_name(std::string_view tunnel) {
  return std::string(kDecPrefix) + std::string(tunnel);
}

std::string_view drop_name(Drop reason) {
  static constexpr std::array<std::string_view, kDropReasons> names = {
      "truncated",     "bad_ip_header",  "bad_version",  "reversed_header",
      "unknown_peer",  "wrong_local",    "frag_overlap", "frag_timeout",
      "frag_oversize", "frag_malformed", "no_tunnel",    "gso",
      "helper_failed", "frag_evicted",   "plaintext",    "esp_no_sa"};
  auto i = static_cast<std::size_t>(reason);
  return i < names.size() ? names[i] : "unknown";
}

uint64_t Counters::total_drops() const {
  uint64_t sum = 0;
  for (uint64_t d : drops) sum += d;
  return sum;
}

static_assert(kDropReasons == ETHERIP_DROP_MAX, "Drop must mirror enum etherip_drop");
static_assert(kMaxTunnelMtu + ETH_HLEN + 8 + 2 <= ETHERIP_FRAG_MAX,
              "a double-tagged frame of the largest tunnel MTU must fit a reassembled datagram");
static_assert(kEspPairMtu >= 20 + ETHERIP_ESP_MAX, "a reassembled ESP packet must fit the pair");
static_assert(ETHERIP_FRAG6_MAX_PIECES * ((1280 - 40 - 8) & ~7) >= ETHERIP_FRAG_MAX,
              "the IPv6 send path must cut the largest datagram for a 1280-byte path");

}  // namespace etherctl::datapath
