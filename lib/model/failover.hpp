// Failover groups in the site file (docs/failover.md):
//   "failover_groups": {"dc1": {"devices": ["dc1-a", "dc1-b"], "vlan": "wan",
//                               "virtual_router_id": 51, "advert_int": 0.1}},
//   "devices": {"dc1-a": {"failover": {"group": "dc1", "priority": 200}, ...}, ...}
// and `"floating": true` on the self IPs that move with the active unit. A tunnel endpoint of a
// pair is named by its group and is one of the group's floating self IPs.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "model/fields.hpp"
#include "model/problem.hpp"
#include "model/site.hpp"

namespace etherctl::model {

FailoverGroup parse_failover_group(const std::string& name, const nlohmann::json& value,
                                   const std::string& path, Problems& problems);
// The device's "failover" object, when it has one.
std::optional<DeviceFailover> parse_device_failover(Fields& device, Problems& problems);

// Cross-object rules of failover groups, floating self IPs and what the units of a group must
// share (the same VLANs, VLAN groups, floating self IPs and pools), each problem with a pointer.
void validate_failover(const Site& site, Problems& problems);

// The configuration both units of `group` share, in a normalised form: equal on both units
// whenever they apply the same file (status shows its hash as the group digest).
nlohmann::json shared_configuration(const Site& site, const FailoverGroup& group);

}  // namespace etherctl::model
