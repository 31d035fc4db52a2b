// Site model -> the objects one device wants in its kernel.
#include <algorithm>
#include <set>

#include "ipsec/connection.hpp"
#include "model/failover.hpp"
#include "model/pools.hpp"
#include "model/validate.hpp"
#include "plan/plan.hpp"

namespace etherctl::plan {

using model::pointer_append;

Objects desired_objects(const model::Site& site, const model::Device& device, Role role) {
  Objects objects;
  const model::FailoverGroup* failover = model::failover_group_of(site, device);
  const bool standby = failover && role == Role::Standby;
  std::set<std::string> grouped;  // VLANs and tunnels that are bridge ports
  for (const auto& [name, group] : device.vlan_groups) {
    grouped.insert(group.members.begin(), group.members.end());
  }

  std::vector<std::string> underlay;  // interfaces outer EtherIP packets can arrive on
  std::set<std::string> ifnames;      // interfaces the file declares
  for (const auto& [name, vlan] : device.vlans) ifnames.insert(vlan.ifname());
  for (const auto& [name, vlan] : device.vlans) {
    // An 802.1Q device cannot go up on a parent that is down: the parent is adopted too.
    if (vlan.tag && ifnames.insert(vlan.interface).second) {
      objects.push_back({kVlan,
                         vlan.interface,
                         vlan.interface,
                         pointer_append(vlan.path, "interface"),
                         {{"up", true}},
                         false,
                         true});
    }
    Object o{kVlan, vlan.ifname(), name, vlan.path, {{"up", true}}, false, !vlan.tag};
    if (vlan.tag) {
      o.attrs["interface"] = vlan.interface;
      o.attrs["tag"] = *vlan.tag;
    }
    if (vlan.mtu) o.attrs["mtu"] = *vlan.mtu;
    if (!grouped.count(name)) underlay.push_back(vlan.ifname());
    objects.push_back(std::move(o));
  }

  for (const auto& [name, group] : device.vlan_groups) {
    Object o{kVlanGroup, name, name, group.path, {{"up", true}, {"mode", group.mode}}};
    if (group.mtu) o.attrs["mtu"] = *group.mtu;
    objects.push_back(std::move(o));
    // A failover standby joins no segments: both units are on every VLAN of the group, so a
    // standby that bridged them, or bridged one to the tunnel, would loop the segment through
    // the pair. It keeps a group's only VLAN (its fixed self IP there stays reachable).
    const auto vlans_in_group =
        std::count_if(group.members.begin(), group.members.end(),
                      [&](const std::string& member) { return device.vlans.count(member) > 0; });
    for (size_t i = 0; i < group.members.size(); ++i) {
      const bool tunnel = !device.vlans.count(group.members[i]);
      if (standby && (tunnel || vlans_in_group > 1)) continue;
      std::string link = device.ifname_of(group.members[i]);
      std::string path = pointer_append(pointer_append(group.path, "members"), std::to_string(i));
      Object port{kPort,
                  name + "/" + link,
                  name + "/" + group.members[i],
                  path,
                  {{"bridge", name}, {"link", link}}};
      if (failover && tunnel) port.attrs["flush_fdb"] = true;  // port.cpp says why
      // The ports the standby leaves out: joined only through the agent's role gate
      // (engine.hpp, Options::join_gate).
      if (failover && (tunnel || vlans_in_group > 1)) port.attrs["gated"] = true;
      objects.push_back(std::move(port));
    }
  }

  // A unit of a failover group is a tunnel endpoint under its group's name.
  const std::string& endpoint_name = model::endpoint_name(site, device);
  for (const auto& [name, tunnel] : site.tunnels) {
    auto local = tunnel.endpoints.find(endpoint_name);
    if (local == tunnel.endpoints.end()) continue;
    // The other end: a device or group of the file, or a peer etherctl does not manage, alike.
    const model::IpAddress* remote = nullptr;
    for (const auto& [peer, endpoint] : tunnel.endpoints) {
      if (peer != endpoint_name) remote = &endpoint.address;
    }
    Object o{kTunnel,
             name,
             name,
             tunnel.path,
             {{"local", local->second.address.str()},
              {"remote", remote ? remote->str() : ""},
              {"accept_reversed", tunnel.accept_reversed_header},
              {"fast_path", tunnel.fast_path},
              {"clamp_tcp_mss", tunnel.clamp_tcp_mss},
              {"underlay", underlay},
              {"up", true},
              {"attached", true},       // its programs on eip-<name> and the underlays
              {"link_settings", "ok"},  // its links' offloads, queues, sysctls (datapath)
              // IPsec: the SAs' reqid (0: none); the datapath accepts only what they decrypted
              {"ipsec_reqid", tunnel.ipsec ? model::ipsec_reqid(name) : 0},
              // IPsec: what ESP adds, kept free of the WAN MTU by the MSS clamp
              {"esp_headroom",
               tunnel.ipsec && tunnel.clamp_tcp_mss ? model::esp_overhead(*tunnel.ipsec) : 0}}};
    if (tunnel.mtu) o.attrs["mtu"] = *tunnel.mtu;
    objects.push_back(std::move(o));
    if (tunnel.ipsec && remote) {
      const model::Ipsec& ipsec = *tunnel.ipsec;
      std::string peer_device;
      for (const auto& [peer, address] : tunnel.endpoints)
        if (peer != endpoint_name) peer_device = peer;
      ipsec::ConnectionSpec spec;
      spec.tunnel = name;
      spec.local = local->second.address.str();
      spec.remote = remote->str();
      auto id = [&](const std::string& dev, const std::string& address) {
        auto it = ipsec.identities.find(dev);
        return it != ipsec.identities.end() ? it->second : address;
      };
      spec.local_id = id(endpoint_name, spec.local);
      spec.remote_id = id(peer_device, spec.remote);
      spec.mode = ipsec.mode;
      spec.reqid = model::ipsec_reqid(name);
      spec.ike_proposal = ipsec.ike_proposal;
      spec.esp_proposal = ipsec.esp_proposal;
      spec.ike_rekey = ipsec.ike_rekey_seconds;
      spec.child_rekey = ipsec.child_rekey_seconds;
      spec.dpd = ipsec.dpd_seconds;
      spec.psk_file = ipsec.psk_file.value_or("");
      spec.psk_fingerprint = ipsec.psk_fingerprint;
      spec.certificate = ipsec.certificate.value_or("");
      spec.key = ipsec.key.value_or("");
      spec.ca = ipsec.ca.value_or("");
      const std::string key = spec.local + " -> " + spec.remote;
      objects.push_back({kIpsecPolicy,
                         key,
                         name,
                         ipsec.path,
                         {{"local", spec.local},
                          {"remote", spec.remote},
                          {"reqid", spec.reqid},
                          {"mode", spec.mode},
                          {"directions", {"in", "out"}},
                          {"exact", true}}});
      // The policies stay on a standby: they only block (no SA, no clear protocol 97 either
      // way). The connection is the active role's, like the floating endpoint it uses: the
      // unit that takes the role loads and initiates it after it holds the address, and the
      // peer replaces the old unit's IKE SA (INITIAL_CONTACT; docs/failover.md).
      if (!standby) {
        nlohmann::json attrs = spec.attrs();
        attrs["loaded"] = true;
        objects.push_back({kIpsecConnection, name, name, ipsec.path, attrs});
      }
    }
  }

  // Fixed self IPs before floating ones: the first IPv4 address of a subnet is its primary,
  // and the fixed one must stay when the floating one goes.
  for (const bool floating : {false, true}) {
    for (const auto& [name, self_ip] : device.self_ips) {
      if (self_ip.floating != floating || (floating && (!failover || standby))) continue;
      std::string link = device.ifname_of(self_ip.vlan);
      std::string address = self_ip.address.str();
      Object o{kSelfIp,
               link + " " + address,
               name,
               self_ip.path,
               {{"interface", link}, {"address", address}}};
      if (floating) o.attrs["floating"] = true;  // address.cpp: created the way it must move
      objects.push_back(std::move(o));
    }
  }

  for (const auto& [name, route] : device.routes) {
    std::string destination = route.destination.network().str();
    Object o{kRoute,
             destination,
             name,
             route.path,
             {{"destination", destination},
              {"gateway", route.gateway ? route.gateway->str() : std::string()}}};
    if (route.vlan) o.attrs["interface"] = device.ifname_of(*route.vlan);
    objects.push_back(std::move(o));
  }

  // Virtual addresses that are no self IP: host addresses on the VLAN facing the clients
  // (model::place_virtual_address), one per address however many pools (ports) share it.
  std::set<std::string> addresses;
  for (const auto& o : objects)
    if (o.kind == kSelfIp) addresses.insert(o.key);
  for (const auto& [name, pool] : device.pools) {
    const model::VirtualAddressPlacement placement = model::place_virtual_address(device, pool);
    if (placement.is_self_ip || placement.vlan.empty()) continue;
    const std::string link = device.ifname_of(placement.vlan);
    const std::string address =
        model::IpPrefix{pool.address, pool.address.max_prefix()}.str();  // /32 or /128
    if (!addresses.insert(link + " " + address).second) continue;
    objects.push_back({kSelfIp,
                       link + " " + address,
                       "virtual address of pool " + name,
                       pointer_append(pointer_append(pool.path, "virtual"), "address"),
                       {{"interface", link}, {"address", address}}});
  }

  for (const auto& [name, pool] : device.pools) {
    std::string service = ipvs_service_key(pool.protocol, pool.address.str(), pool.port);
    objects.push_back({kIpvsService,
                       service,
                       name,
                       pool.path,
                       {{"protocol", pool.protocol},
                        {"address", pool.address.str()},
                        {"port", pool.port},
                        {"scheduler", pool.scheduler}}});
    for (const auto& [key, member] : pool.members) {
      objects.push_back({kIpvsMember,
                         ipvs_member_key(service, member.address.str(), member.port),
                         name + " " + key,
                         member.path,
                         {{"service", service},
                          {"address", member.address.str()},
                          {"port", member.port},
                          {"weight", member.weight},
                          {"forward", "masq"}}});
    }
  }
  // Both IPVS connection sync daemons on both units of a pair with pools, whatever the role:
  // the standby holds the active unit's connections when it takes over, and a unit that
  // returns holds the ones made while it was away (docs/failover.md).
  if (failover && !device.pools.empty()) {
    for (const char* state : {"master", "backup"}) {
      objects.push_back({kIpvsSync,
                         state,
                         "connection sync " + std::string(state),
                         failover->path,
                         {{"interface", device.ifname_of(failover->vlan)},
                          {"syncid", failover->virtual_router_id}}});
    }
  }
  return objects;
}

}  // namespace etherctl::plan
