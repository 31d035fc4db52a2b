// Virtual Location for pool members: is a member in this data center or behind the tunnel?
// Pure decision code over what the kernel holds (neighbour table, bridge FDB), read elsewhere:
//   member address -> the VLAN group whose self IP subnet holds it -> the member's MAC in the
//   neighbour table of that group -> the bridge FDB port of that MAC -> a tunnel port means
//   remote, any other port local, none unknown.
// And the weight policy: remote members get weight 0 (quiesced: IPVS keeps their connections,
// new ones go elsewhere) while at least min_active_members local members carry traffic.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "model/ip.hpp"
#include "model/site.hpp"

namespace etherctl::location {

enum class Location { Local, Remote, Unknown };
std::string to_string(Location location);

// A neighbour table entry (RTM_NEWNEIGH) on a link.
struct Neighbour {
  std::string interface;  // the link the entry is on (the VLAN group's bridge)
  model::IpAddress address;
  std::string mac;     // "" when the kernel has no link-layer address (INCOMPLETE, FAILED)
  bool usable = true;  // false for STALE, FAILED, INCOMPLETE: the watcher should resolve it
};

// A bridge forwarding database entry (RTM_NEWNEIGH, AF_BRIDGE).
struct FdbEntry {
  std::string bridge;  // the VLAN group
  std::string port;    // the bridge port the MAC was learned on
  std::string mac;
};

// What the kernel holds, as far as locating members needs it.
struct Observation {
  std::vector<Neighbour> neighbours;
  std::vector<FdbEntry> fdb;
};

struct MemberLocation {
  Location location = Location::Unknown;
  std::string group;     // the VLAN group that holds the member's subnet ("" when none does)
  std::string mac;       // the member's MAC, when known
  std::string port;      // the bridge port the MAC was learned on, when known
  bool resolve = false;  // the neighbour entry is missing or not usable: resolve the address
  std::string reason;    // one line for `etherctl status`
};

// Where `member` is, for `device` of `site` (its VLAN groups, self IPs and tunnels).
MemberLocation locate(const model::Site& site, const model::Device& device,
                      const model::IpAddress& member, const Observation& observation);

struct WeightedMember {
  int configured = 1;
  Location location = Location::Unknown;
};

// The weight each member gets in IPVS. Local and unknown members keep their configured
// weight (an unknown member is not quiesced on a guess); remote members get 0 as long as at
// least `min_active_members` local members with a non-zero weight remain, otherwise they keep
// their configured weight too (remote members carry traffic rather than nothing).
std::vector<int> effective_weights(const std::vector<WeightedMember>& members,
                                   int min_active_members);

// One member of a pool as the monitor sees it: where it is and the weight it should carry.
struct MemberAssessment {
  std::string key;  // the member's key in the site file ("10.1.0.21:80")
  MemberLocation where;
  int configured = 1;
  int effective = 1;
};

// Locates every member of `pool` and applies the weight policy. Without a monitor every member
// keeps its configured weight (its location is still reported).
std::vector<MemberAssessment> assess_pool(const model::Site& site, const model::Device& device,
                                          const model::Pool& pool, const Observation& observation);

}  // namespace etherctl::location
