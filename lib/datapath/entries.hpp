// The entries the datapath writes into its maps, read back as TunnelSpec and Counters: the
// `tunnels` map (one entry per tunnel, key = ifindex of its eip device), `peers`, `locals` and the
// per-CPU `stats`. Internal to lib/datapath.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "datapath/bpf/etherip_common.h"
#include "datapath/types.hpp"

namespace etherctl::datapath {

struct Address {
  uint32_t family = 0;  // ETHERIP_FAMILY_V4 / _V6
  std::array<uint8_t, 16> bytes{};
};

// Parses IPv4 or IPv6 text; throws DatapathError for anything else.
Address parse_address(const std::string& text);
std::string format_address(uint32_t family, const uint8_t* bytes);

// (key, value) of every entry of the `tunnels` map.
std::vector<std::pair<uint32_t, etherip_tunnel>> tunnel_entries(int tunnels_fd);

// The counters of one `stats` key, summed over CPUs; nullopt when there is no such key.
std::optional<Counters> read_counters(int stats_fd, uint32_t key);

// The specification a `tunnels` entry stands for.
TunnelSpec spec_of(const etherip_tunnel& value);

// The eip device of a tunnels-map entry still exists under its name (not gone, not reused).
bool entry_alive(uint32_t key, const etherip_tunnel& value);

// The map entries Datapath::apply() writes for this entry are all there
// (TunnelStatus::complete; the filters are TunnelStatus::attached).
bool entry_complete(uint32_t key, const etherip_tunnel& value, int peers_fd, int locals_fd);

}  // namespace etherctl::datapath
