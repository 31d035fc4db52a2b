// Cross-object rules of a parsed site: references, duplicates, name collisions, tunnels.
#pragma once

#include "model/problem.hpp"
#include "model/site.hpp"

namespace etherctl::model {

// Appends every problem found; never stops at the first.
void validate(const Site& site, Problems& problems);

// Interface name of a tunnel's datapath end (the veth peer that carries the BPF programs).
inline std::string tunnel_datapath_ifname(const std::string& tunnel) { return "eip-" + tunnel; }
// With IPsec, a second veth pair: the decap program sends the peer's ESP into "esp-<tunnel>"; the
// kernel decrypts it in GRO on "dec-<tunnel>", where the decap program takes the clear EtherIP.
inline std::string tunnel_esp_ifname(const std::string& tunnel) { return "esp-" + tunnel; }
inline std::string tunnel_decrypted_ifname(const std::string& tunnel) { return "dec-" + tunnel; }

}  // namespace etherctl::model
