// Link settings the EtherIP datapath depends on, applied with ioctls and /proc/sys writes (no
// shelling out). Everything acts on the caller's network namespace. Depends on types.hpp only.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace etherctl::datapath {

// The interface's MAC address (SIOCGIFHWADDR).
std::array<uint8_t, 6> hardware_address(const std::string& ifname);

// The interface's MTU (SIOCGIFMTU).
int interface_mtu(const std::string& ifname);

// Turns off every tx checksum and segmentation offload (ETHTOOL_SFEATURES), so the kernel
// segments GSO packets and fills in checksums before they leave through this interface.
void disable_offloads(const std::string& ifname);

// Writes /proc/sys/<key with dots as slashes>; interface names may contain dots, so the
// interface is passed separately: sysctl("net/ipv4/conf", "eip-x", "rp_filter", "0").
void write_sysctl(const std::string& prefix, const std::string& ifname, const std::string& leaf,
                  const std::string& value);

// What apply() does to the links besides BPF: segmentation and tx-checksum offloads off on
// the bridge-port end (there is no GSO handler for protocol 97, so the kernel must segment
// and checksum before encapsulation); on the eip end IPv4 forwarding, accept_local=1 and
// rp_filter=0 (the re-injected outer packet has a local source; a nonzero
// net.ipv4.conf.all.rp_filter is moved into every interface's own setting, which leaves their
// effective filtering unchanged, because the kernel applies the larger one), IPv6 forwarding, no
// IPv6 addresses of its own. IPv6 outer endpoints also need net.ipv6.conf.all.forwarding=1, which
// ip6_forward checks globally; apply() sets it for IPv6 tunnels.
void prepare_links(const std::string& tunnel, bool ipv6_outer);

}  // namespace etherctl::datapath
