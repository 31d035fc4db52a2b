#include "datapath/entries.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "datapath/support.hpp"

namespace etherctl::datapath {

Address parse_address(const std::string& text) {
  Address a;
  if (::inet_pton(AF_INET, text.c_str(), a.bytes.data()) == 1) {
    a.family = ETHERIP_FAMILY_V4;
  } else if (::inet_pton(AF_INET6, text.c_str(), a.bytes.data()) == 1) {
    a.family = ETHERIP_FAMILY_V6;
  } else {
    throw DatapathError(EINVAL, fmt::format("'{}' is not an IPv4 or IPv6 address", text));
  }
  return a;
}

std::string format_address(uint32_t family, const uint8_t* bytes) {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family == ETHERIP_FAMILY_V4 ? AF_INET : AF_INET6, bytes, text, sizeof(text));
  return text;
}

std::vector<std::pair<uint32_t, etherip_tunnel>> tunnel_entries(int tunnels_fd) {
  std::vector<std::pair<uint32_t, etherip_tunnel>> out;
  uint32_t key = 0, next = 0;
  uint32_t* prev = nullptr;
  while (bpf_map_get_next_key(tunnels_fd, prev, &next) == 0) {
    etherip_tunnel value{};
    if (bpf_map_lookup_elem(tunnels_fd, &next, &value) == 0) out.emplace_back(next, value);
    key = next;
    prev = &key;
  }
  return out;
}

std::optional<Counters> read_counters(int stats_fd, uint32_t key) {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) fail(cpus, "counting CPUs");
  std::vector<etherip_stats> per_cpu(static_cast<std::size_t>(cpus));
  if (bpf_map_lookup_elem(stats_fd, &key, per_cpu.data()) != 0) return std::nullopt;
  Counters c;
  for (const auto& s : per_cpu) {
    c.rx_packets += s.rx_packets;
    c.rx_bytes += s.rx_bytes;
    c.tx_packets += s.tx_packets;
    c.tx_bytes += s.tx_bytes;
    c.rx_fragments += s.rx_fragments;
    c.reassembled += s.reassembled;
    for (std::size_t i = 0; i < kDropReasons; ++i) c.drops[i] += s.drops[i];
  }
  return c;
}

TunnelSpec spec_of(const etherip_tunnel& v) {
  TunnelSpec spec;
  spec.name.assign(v.name, strnlen(v.name, sizeof(v.name)));
  spec.local = format_address(v.family, v.local);
  spec.remote = format_address(v.family, v.remote);
  for (uint32_t u : v.underlay)
    if (u) spec.underlay.push_back(if_name(static_cast<int>(u)));
  spec.accept_reversed = v.flags & ETHERIP_FLAG_ACCEPT_REVERSED;
  spec.fast_path = v.flags & ETHERIP_FLAG_FAST_PATH;
  spec.clamp_tcp_mss = v.clamp_mtu != 0;
  spec.ipsec_reqid = (v.flags & ETHERIP_FLAG_IPSEC) ? v.reqid : 0;
  spec.esp_headroom = v.esp_headroom;
  return spec;
}

bool entry_alive(uint32_t key, const etherip_tunnel& value) {
  return if_name(static_cast<int>(key)) ==
         eip_name(std::string_view(value.name, strnlen(value.name, sizeof(value.name))));
}

bool entry_complete(uint32_t key, const etherip_tunnel& value, int peers_fd, int locals_fd) {
  if (!entry_alive(key, value) || peers_fd < 0 || locals_fd < 0) return false;
  etherip_peer_key pk{};
  pk.family = value.family;
  std::memcpy(pk.local, value.local, 16);
  std::memcpy(pk.remote, value.remote, 16);
  uint32_t owner = 0;
  if (bpf_map_lookup_elem(peers_fd, &pk, &owner) != 0 || owner != key) return false;
  etherip_addr_key ak{};
  ak.family = value.family;
  std::memcpy(ak.addr, value.local, 16);
  return bpf_map_lookup_elem(locals_fd, &ak, &owner) == 0;
}

}  // namespace etherctl::datapath
