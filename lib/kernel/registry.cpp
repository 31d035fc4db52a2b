// The list of kinds. Adding a kind is one line here (or one register_kind() call for a kind
// that lives outside lib/kernel) plus its file.
#include <algorithm>
#include <array>
#include <stdexcept>

#include "kernel/detail.hpp"

namespace etherctl::kernel {

namespace {

// Creation order: links (VLANs, bridges, tunnel interfaces) before the addresses on them;
// routes after the addresses that make their gateways reachable; IPVS after the addresses it
// needs; bridge ports last (lib/plan/plan.cpp says why). Deletion runs in reverse.
// IPsec: the policies before the tunnel (its datapath must never send in clear), the strongSwan
// connection after it (the decrypted packets need the datapath's receive path) and after the
// addresses and routes (charon initiates from the local endpoint at once).
constexpr std::array<std::string_view, 12> kCreationOrder = {
    plan::kVlan,  plan::kVlanGroup,       plan::kIpsecPolicy, plan::kTunnel,     plan::kSelfIp,
    plan::kRoute, plan::kIpsecConnection, plan::kIpvsService, plan::kIpvsMember, plan::kIpvsSync,
    plan::kPort,  plan::kKeepalived,
};

size_t rank(std::string_view kind) {
  auto it = std::find(kCreationOrder.begin(), kCreationOrder.end(), kind);
  // Unknown kinds go last, in registration order.
  return static_cast<size_t>(it - kCreationOrder.begin());
}

std::vector<KindOps>& registry() {
  // In creation order (kCreationOrder): register_kind inserts by rank.
  static std::vector<KindOps> kinds = {vlan_kind(),        bridge_kind(),    xfrm_policy_kind(),
                                       address_kind(),     route_kind(),     ipvs_service_kind(),
                                       ipvs_member_kind(), ipvs_sync_kind(), port_kind()};
  return kinds;
}

}  // namespace

const std::vector<KindOps>& kinds() { return registry(); }

const KindOps& kind_ops(std::string_view kind) {
  for (const KindOps& ops : registry()) {
    if (ops.kind == kind) return ops;
  }
  throw std::out_of_range("kernel: no such object kind \"" + std::string(kind) + "\"");
}

void register_kind(const KindOps& ops) {
  auto& kinds = registry();
  for (KindOps& existing : kinds) {
    if (existing.kind == ops.kind) {
      existing = ops;
      return;
    }
  }
  auto position = std::find_if(kinds.begin(), kinds.end(), [&](const KindOps& existing) {
    return rank(existing.kind) > rank(ops.kind);
  });
  kinds.insert(position, ops);
}

}  // namespace etherctl::kernel
