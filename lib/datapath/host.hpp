// Link settings the EtherIP datapath depends on, applied with ioctls and /proc/sys writes (no
// shelling out) and read back to find drift. Everything acts on the caller's network namespace.
// Depends on types.hpp only.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace etherctl::datapath {

// The interface's MAC address (SIOCGIFHWADDR).
std::array<uint8_t, 6> hardware_address(const std::string& ifname);

// The interface's MTU (SIOCGIFMTU).
int interface_mtu(const std::string& ifname);

// One offload feature of a link, as `ethtool -k` names it ("rx-gro", "tx-tcp-segmentation").
struct Feature {
  bool active = false;
  bool fixed = false;  // the driver does not let it change ("[fixed]")
};
// Every feature of the link, by name (ETHTOOL_GSTRINGS + ETHTOOL_GFEATURES): the names come
// from the kernel, so no bit position is hard-coded.
std::map<std::string, Feature> features(const std::string& ifname);
// Turns on or off every feature for which `want` has a value (ETHTOOL_SFEATURES); fixed ones
// stay as they are.
using FeatureWish = std::function<std::optional<bool>(std::string_view name)>;
void set_features(const std::string& ifname, const FeatureWish& want);

// Receive and transmit queues (ETHTOOL_GCHANNELS); nullopt when the driver has no channels.
struct Queues {
  uint32_t rx = 0, tx = 0, max_rx = 0, max_tx = 0;
};
std::optional<Queues> queues(const std::string& ifname);
// ETHTOOL_SCHANNELS. A veth takes its carrier down and up while it changes them.
void set_queues(const std::string& ifname, uint32_t rx, uint32_t tx);

// Writes /proc/sys/<key with dots as slashes>; interface names may contain dots, so the
// interface is passed separately: sysctl("net/ipv4/conf", "eip-x", "rp_filter", "0").
void write_sysctl(const std::string& prefix, const std::string& ifname, const std::string& leaf,
                  const std::string& value);
// The value (first word) of that file; "" when it cannot be read.
std::string read_sysctl(const std::string& prefix, const std::string& ifname,
                        const std::string& leaf);

// What apply() does to the links of tunnel T besides BPF (the design and the reasons are in
// lib/datapath/README.md, "Link settings"):
// - T, the bridge port: every segmentation offload off (there is no GSO handler for protocol
//   97: the kernel segments before the veth), GRO on (frames decapsulated into eip-T are
//   coalesced on their way into the bridge), the generic transmit checksum offload on when
//   partial_checksums_safe() (TCP/UDP checksums are filled in after encapsulation, by the
//   kernel or the underlay's NIC), else off (the kernel fills them in before the veth);
// - eip-T: every segmentation offload off (a veth hands frames to its peer's NAPI, hence GRO,
//   only when the sending end has no TSO; nothing eip-T sends is ever a GSO packet), GRO off
//   (frames for the encap program must arrive one by one);
// - both ends: one queue per CPU (up to what the pair was created with), so that each CPU's
//   decapsulated frames have their own NAPI instance on T (the decap program picks the queue
//   of the CPU it runs on);
// - eip-T: IPv4 forwarding, accept_local=1 and rp_filter=0 (the outer packet enters the stack
//   there with a local source; a nonzero net.ipv4.conf.all.rp_filter is moved into every
//   interface's own setting, which leaves their effective filtering unchanged, because the
//   kernel applies the larger one), IPv6 off (IPv4 outer) or on without addresses of its own
//   and forwarding, plus net.ipv6.conf.all.forwarding=1, which ip6_forward checks globally
//   (IPv6 outer).
// - IPsec tunnels, their pair esp-T -> dec-T: esp-T without segmentation offloads (as eip-T:
//   so that its packets take dec-T's NAPI and GRO, where ESP is decrypted), dec-T with GRO on;
//   one queue per CPU on both; IPv6 off on both; rp_filter=0 on dec-T (the decrypted packets
//   of other SAs between the same addresses enter the stack there, with the peer as source).
void prepare_links(const std::string& tunnel, bool ipv6_outer,
                   const std::vector<std::string>& underlays, bool ipsec = false);

// Whether a partial checksum (CHECKSUM_PARTIAL: the sum over the data still to be done, from
// csum_start, written at csum_offset) can ride inside the outer packet:
// - IPv4 outer: the offsets stay valid through encapsulation (bpf_skb_adjust_room keeps the
//   inner bytes where they are in the buffer), the stack resolves the checksum before it
//   fragments (ip_do_fragment), and a device without checksum offload resolves it as it sends
//   (validate_xmit_skb), both in software from csum_start;
// - unless an underlay has the IPv4-only TCP/UDP offload (NETIF_F_IP_CSUM, "tx-checksum-ipv4"):
//   the stack then hands the packet to the driver on the strength of csum_offset alone, and such
//   hardware may parse the headers, find protocol 97 and leave the inner checksum unfilled. The
//   generic offload ("tx-checksum-ip-generic") sums from csum_start whatever the protocol;
// - never with an IPv6 outer: the datapath cuts IPv6 fragments itself, from a copy of the
//   payload, and BPF can neither see nor resolve a partial checksum (6.1 exposes no ip_summed),
//   so the pieces would carry offsets into the wrong bytes.
// IPsec tunnels keep the offload off as well (xfrm_output would resolve the checksum in
// software before ESP anyway; the combination is not tested).
bool partial_checksums_safe(bool ipv6_outer, const std::vector<std::string>& underlays);

// How the links differ from what prepare_links sets, one line each ("dcx: rx-gro is off, the
// datapath needs it on"); empty when everything is in place. Features the driver does not let
// change are not compared. A change of an underlay's offloads that changes
// partial_checksums_safe() shows here too.
std::vector<std::string> link_drift(const std::string& tunnel, bool ipv6_outer,
                                    const std::vector<std::string>& underlays, bool ipsec = false);

// ESP GRO (the kernel module esp4_offload) decrypts the ESP of IPsec tunnels on dec-T: "" when
// it is loaded or built in, else why not (apply reports it with the tunnel's IPsec state).
std::string esp_gro_missing();
// Loads esp4_offload (modprobe) when esp_gro_missing(). Without it an IPsec tunnel receives
// nothing (its ESP is dropped as esp_no_sa), but never accepts clear text either.
void load_esp_gro();

}  // namespace etherctl::datapath
