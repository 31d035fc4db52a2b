// Pools (IPVS virtual services and their members): parsing of one pool and the cross-pool
// checks of a device. The types live in site.hpp.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/problem.hpp"
#include "model/site.hpp"

namespace etherctl::model {

// IPVS schedulers etherctl accepts (the kernel's ip_vs_<name> modules).
const std::vector<std::string>& pool_schedulers();

// "10.1.0.21:80" or "[2001:db8::5]:80" -> address and port; nullopt and *error otherwise.
struct Endpoint {
  IpAddress address;
  int port = 0;
};
std::optional<Endpoint> parse_endpoint(const std::string& text, std::string* error);

// "10.1.0.21:80" / "[2001:db8::5]:80" in canonical form.
std::string endpoint_string(const IpAddress& address, int port);

// Structural parse of one pool (types, ranges, unknown keys, member keys).
Pool parse_pool(const std::string& name, const nlohmann::json& value, const std::string& path,
                Problems& problems);

// Where a pool's virtual address lives, so that IPVS sees packets for it (like BIG-IP's
// virtual address): when it is a self IP, there already (nothing to add); otherwise etherctl
// adds it as a host address (/32, /128, marked like its other addresses) on the VLAN or VLAN
// group named by "virtual": {"vlan": ...}, or else on the one of the self IP whose subnet
// holds it, where Linux answers ARP and neighbour solicitations for it. `error` says why
// etherctl cannot tell where (no self IP's subnet holds it, or those of several VLANs do).
struct VirtualAddressPlacement {
  std::string vlan;         // the VLAN or VLAN group (a name of the file); empty with an error
  bool is_self_ip = false;  // the address is one of the device's self IPs
  std::string error;
};
VirtualAddressPlacement place_virtual_address(const Device& device, const Pool& pool);

// Cross-object rules: address families of virtual and members, duplicate members, one pool per
// virtual (address, port, protocol), min_active_members within the member count.
void validate_pools(const Device& device, Problems& problems);

}  // namespace etherctl::model
