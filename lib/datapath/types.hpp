// What the EtherIP datapath is made of, as plain values: tunnel specifications, counters, drop
// reasons, names and limits. No kernel access: every other part of lib/datapath builds on these.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace etherctl::datapath {

// A failed kernel or libbpf operation: errno plus context.
class DatapathError : public std::runtime_error {
 public:
  DatapathError(int error, const std::string& what);
  int error() const { return error_; }

 private:
  int error_;
};

// Longest tunnel name: "eip-" + name must fit IFNAMSIZ - 1.
inline constexpr std::size_t kMaxTunnelName = 11;
// Largest tunnel (bridge port) MTU the datapath carries: its frames, with up to two VLAN tags,
// plus the EtherIP header fit the largest datagram it reassembles and, over IPv6, fragments
// (ETHERIP_FRAG_MAX, 9240 bytes, in at most 8 fragments on a 1280-byte path).
inline constexpr int kMaxTunnelMtu = 9216;
// The veth end that carries the encap program: kEipPrefix + tunnel name.
inline constexpr std::string_view kEipPrefix = "eip-";
std::string eip_name(std::string_view tunnel);
// IPsec tunnels have a second veth pair: ESP from the peer is sent out of kEspPrefix + name and
// decrypted by GRO on its peer kDecPrefix + name (lib/datapath/README.md, "IPsec").
inline constexpr std::string_view kEspPrefix = "esp-";
inline constexpr std::string_view kDecPrefix = "dec-";
std::string esp_name(std::string_view tunnel);
std::string dec_name(std::string_view tunnel);
// MTU of that pair: any whole ESP packet an underlay can receive fits (a veth drops larger ones).
inline constexpr int kEspPairMtu = 65535;

// Drop reasons, in the order of the BPF program's enum etherip_drop.
enum class Drop : int {
  kTruncated,
  kBadIpHeader,
  kBadVersion,
  kReversed,
  kUnknownPeer,
  kWrongLocal,
  kFragOverlap,
  kFragTimeout,
  kFragOversize,
  kFragMalformed,
  kNoTunnel,
  kGso,
  kHelper,
  kFragEvicted,
  kPlaintext,
  kEspNoSa,
};
inline constexpr std::size_t kDropReasons = 16;
// Stable snake_case name for status output ("unknown_peer", ...).
std::string_view drop_name(Drop reason);

// Summed over CPUs.
struct Counters {
  uint64_t rx_packets = 0;  // frames decapsulated into the bridge
  uint64_t rx_bytes = 0;    // inner frame bytes
  uint64_t tx_packets = 0;  // frames encapsulated
  uint64_t tx_bytes = 0;    // inner frame bytes
  uint64_t rx_fragments = 0;
  uint64_t reassembled = 0;
  std::array<uint64_t, kDropReasons> drops{};
  uint64_t drop(Drop reason) const { return drops[static_cast<int>(reason)]; }
  uint64_t total_drops() const;
};

struct TunnelSpec {
  std::string name;                   // bridge-port end of the veth pair (≤ kMaxTunnelName)
  std::string local;                  // local outer address (IPv4 or IPv6 text)
  std::string remote;                 // peer's outer address, same family
  std::vector<std::string> underlay;  // interfaces the outer packets arrive on (decap)
  bool accept_reversed = false;       // accept the 0x0300 header of old BSD peers
  // Send encapsulated IPv4 packets that fit the route MTU straight out of the underlay
  // (bpf_fib_lookup + redirect) instead of through the stack: faster, but netfilter and IPsec
  // (xfrm) policies do not see them. Packets that need fragmentation always take the stack.
  bool fast_path = false;
  // With fast_path: encapsulate at the tunnel port's own TC egress already (etherip_encap_port),
  // skipping the veth crossing too. Measured only (bench/datapath_throughput.py, tweak "port"):
  // not in the site schema.
  bool port_encap = false;
  // Lower the MSS of TCP SYNs entering the tunnel so that full segments of new connections fit
  // the smallest underlay MTU unfragmented (existing connections still work, fragmented).
  bool clamp_tcp_mss = false;
  // IPsec (IPv4 only): nonzero, the reqid of the tunnel's SAs. Then EtherIP is accepted only
  // when one of those SAs from the peer decrypted it (else dropped as "plaintext"), and ESP from
  // the peer goes through the pair esp_name/dec_name, which must exist, to be decrypted.
  uint32_t ipsec_reqid = 0;
  // IPsec: bytes of the underlay MTU that ESP takes (model::esp_overhead), kept free by the MSS
  // clamp so that full segments fit after encryption.
  uint16_t esp_headroom = 0;
};

struct Options {
  // bpffs mount point; mounted there when it holds no bpffs (`ip netns exec` hides the host's).
  std::string bpffs = "/sys/fs/bpf";
};

struct TunnelStatus {
  TunnelSpec spec;
  Counters counters;
  // Our encap program is attached to eip-<name>'s ingress and our decap program to every
  // underlay's: false when something detached (or replaced) one behind etherctl's back.
  bool attached = false;
  // The map entries apply() writes are all there: the eip device of the entry still exists
  // (not gone, not another device now), the peer and the local-address entries. False after
  // an apply() or remove() interrupted half-way (or entries deleted by hand).
  bool complete = false;
  // How the tunnel's links differ from the settings apply() gives them (offloads, queues,
  // sysctls: see prepare_links in host.hpp), one line each; empty when all is in place.
  std::vector<std::string> link_drift;
};

// Protocol numbers, handles and priorities of the TC filters (for tests and status output).
inline constexpr uint32_t kTcHandle = 0x97;
inline constexpr uint32_t kTcPriority = 0x97;

}  // namespace etherctl::datapath
