// Cross-object rules of a parsed site: references, duplicates, name collisions, tunnels.
#pragma once

#include "model/problem.hpp"
#include "model/site.hpp"

namespace etherctl::model {

// Appends every problem found; never stops at the first.
void validate(const Site& site, Problems& problems);

// Names of devices, of tunnel peers that etherctl does not manage and of failover groups: one
// name space (a tunnel endpoint is named by any of them).
bool is_device_name(const std::string& name);
inline constexpr const char* kDeviceNameRule =
    "must be at most 63 letters, digits, '.', '_' or '-'";

// Interface name of a tunnel's datapath end (the veth peer that carries the BPF programs).
inline std::string tunnel_datapath_ifname(const std::string& tunnel) { return "eip-" + tunnel; }
// With IPsec, a second veth pair: the decap program sends the peer's ESP into "esp-<tunnel>"; the
// kernel decrypts it in GRO on "dec-<tunnel>", where the decap program takes the clear EtherIP.
inline std::string tunnel_esp_ifname(const std::string& tunnel) { return "esp-" + tunnel; }
inline std::string tunnel_decrypted_ifname(const std::string& tunnel) { return "dec-" + tunnel; }

}  // namespace etherctl::model
