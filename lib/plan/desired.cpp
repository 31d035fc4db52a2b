// Site model -> the objects one device wants in its kernel.
#include <set>

#include "ipsec/connection.hpp"
#include "model/pools.hpp"
#include "model/validate.hpp"
#include "plan/plan.hpp"

namespace etherctl::plan {

using model::pointer_append;

namespace {

// Kernel interface name of a VLAN or VLAN group reference (validated to exist).
std::string ifname_of(const model::Device& device, const std::string& vlan_or_group) {
  auto vlan = device.vlans.find(vlan_or_group);
  return vlan != device.vlans.end() ? vlan->second.ifname() : vlan_or_group;
}

}  // namespace

Objects desired_objects(const model::Site& site, const model::Device& device) {
  Objects objects;
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
    for (size_t i = 0; i < group.members.size(); ++i) {
      std::string link = ifname_of(device, group.members[i]);
      std::string path = pointer_append(pointer_append(group.path, "members"), std::to_string(i));
      objects.push_back({kPort,
                         name + "/" + link,
                         name + "/" + group.members[i],
                         path,
                         {{"bridge", name}, {"link", link}}});
    }
  }

  for (const auto& [name, tunnel] : site.tunnels) {
    auto local = tunnel.endpoints.find(device.name);
    if (local == tunnel.endpoints.end()) continue;
    // The other end: a device of the file or a peer etherctl does not manage, alike.
    const model::IpAddress* remote = nullptr;
    for (const auto& [peer, endpoint] : tunnel.endpoints) {
      if (peer != device.name) remote = &endpoint.address;
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
        if (peer != device.name) peer_device = peer;
      ipsec::ConnectionSpec spec;
      spec.tunnel = name;
      spec.local = local->second.address.str();
      spec.remote = remote->str();
      auto id = [&](const std::string& dev, const std::string& address) {
        auto it = ipsec.identities.find(dev);
        return it != ipsec.identities.end() ? it->second : address;
      };
      spec.local_id = id(device.name, spec.local);
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
      nlohmann::json attrs = spec.attrs();
      attrs["loaded"] = true;
      objects.push_back({kIpsecConnection, name, name, ipsec.path, attrs});
    }
  }

  for (const auto& [name, self_ip] : device.self_ips) {
    std::string link = ifname_of(device, self_ip.vlan);
    std::string address = self_ip.address.str();
    objects.push_back({kSelfIp,
                       link + " " + address,
                       name,
                       self_ip.path,
                       {{"interface", link}, {"address", address}}});
  }

  for (const auto& [name, route] : device.routes) {
    std::string destination = route.destination.network().str();
    Object o{kRoute,
             destination,
             name,
             route.path,
             {{"destination", destination},
              {"gateway", route.gateway ? route.gateway->str() : std::string()}}};
    if (route.vlan) o.attrs["interface"] = ifname_of(device, *route.vlan);
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
    const std::string link = ifname_of(device, placement.vlan);
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
  return objects;
}

}  // namespace etherctl::plan
