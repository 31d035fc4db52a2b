// The EtherIP datapath of one network namespace: the BPF programs of lib/datapath/bpf, their
// maps (shared by all tunnels of the namespace, pinned under bpffs) and their TC attachments.
//
// A tunnel named T is a veth pair: T is the bridge port, "eip-T" carries the encap program on
// its TC ingress. The decap program sits on the TC ingress of the underlay interfaces. All
// state lives in the kernel (attached programs and their maps), so the datapath keeps working
// after etherctl exits; the pins are found again by the next run, or recovered from the
// attached programs when an `ip netns exec` run mounted a private bpffs that is gone.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
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
// The veth end that carries the encap program.
std::string eip_name(std::string_view tunnel);

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
};
inline constexpr std::size_t kDropReasons = 14;
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
  // Lower the MSS of TCP SYNs entering the tunnel so that full segments of new connections fit
  // the smallest underlay MTU unfragmented (existing connections still work, fragmented).
  bool clamp_tcp_mss = false;
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
};

// What the namespace's datapath holds, read from its maps without loading programs (for
// observation and `etherctl status`). Empty when no tunnel is configured.
std::vector<TunnelStatus> inspect(const Options& options = {});

// True when an interrupted run left datapath state that no tunnel interface accounts for:
// an entry whose eip device is gone (or is another device now), or pinned maps without any
// tunnel. Cheap (reads the maps); Datapath::prune() repairs it.
bool needs_pruning(const Options& options = {});

// Removes the pin directories of namespaces that are gone (no loaded program uses their maps
// any more: a namespace deleted without `destroy`). apply() calls it.
void collect_orphaned_pins(const Options& options = {});

class Datapath {
 public:
  // Loads the programs for the caller's network namespace, reusing its existing maps (from the
  // pins, else from the programs attached to "eip-*" devices), creating them otherwise.
  static Datapath open(const Options& options = {});
  ~Datapath();
  Datapath(Datapath&&) noexcept;
  Datapath& operator=(Datapath&&) noexcept;

  // Configures the tunnel and attaches (or atomically replaces) its programs. The veth pair
  // (spec.name and eip_name(spec.name)) and the underlay interfaces must exist. Also turns off
  // segmentation/checksum offloads on spec.name and sets eip's forwarding sysctls (see
  // prepare_links). Idempotent.
  void apply(const TunnelSpec& spec);
  // Detaches the tunnel's programs (from underlays no other tunnel uses) and forgets it.
  // Unpins the maps when it was the last tunnel. Missing devices are fine.
  void remove(std::string_view name);
  // Removes every tunnel of the namespace.
  void remove_all();
  // Forgets the tunnels whose eip device is gone or renamed (their filters on the underlays
  // go too) and unpins the maps when no tunnel remains. Returns one line per repair.
  std::vector<std::string> prune();

  std::vector<TunnelSpec> tunnels() const;
  std::optional<Counters> counters(std::string_view name) const;
  // Drops that belong to no tunnel (EtherIP to another local address, missing config).
  Counters unattributed() const;

  // "<bpffs>/etherctl/cookie-<netns cookie>" (inode-<netns inode> before Linux 5.14)
  const std::string& pin_dir() const;
  // For BPF_PROG_TEST_RUN tests.
  int encap_fd() const;
  int decap_fd() const;

 private:
  struct Impl;
  explicit Datapath(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// What apply() does to the links besides BPF: segmentation and tx-checksum offloads off on
// the bridge-port end (there is no GSO handler for protocol 97, so the kernel must segment
// and checksum before encapsulation); on the eip end IPv4 forwarding, accept_local=1 and
// rp_filter=0 (the re-injected outer packet has a local source; a nonzero
// net.ipv4.conf.all.rp_filter is moved into every interface's own setting, which leaves their
// effective filtering unchanged, because the kernel applies the larger one), IPv6 forwarding, no
// IPv6 addresses of its own. IPv6 outer endpoints also need net.ipv6.conf.all.forwarding=1, which
// ip6_forward checks globally; apply() sets it for IPv6 tunnels.
void prepare_links(const std::string& tunnel, bool ipv6_outer);

// Protocol numbers, handles and priorities of the TC filters (for tests and status output).
inline constexpr uint32_t kTcHandle = 0x97;
inline constexpr uint32_t kTcPriority = 0x97;

}  // namespace etherctl::datapath
