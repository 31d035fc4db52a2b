// Link settings the EtherIP datapath depends on, applied with ioctls and /proc/sys writes (no
// shelling out). Everything acts on the caller's network namespace.
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

}  // namespace etherctl::datapath
