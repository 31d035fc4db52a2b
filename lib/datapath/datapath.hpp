// The EtherIP datapath of one network namespace: the BPF programs of lib/datapath/bpf, their
// maps (shared by all tunnels of the namespace, pinned under bpffs) and their TC attachments.
//
// A tunnel named T is a veth pair: T is the bridge port, "eip-T" carries the encap program on
// its TC ingress. The decap program sits on the TC ingress of the underlay interfaces. All
// state lives in the kernel (attached programs and their maps), so the datapath keeps working
// after etherctl exits; the pins are found again by the next run, or recovered from the
// attached programs when an `ip netns exec` run mounted a private bpffs that is gone.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "datapath/types.hpp"

namespace etherctl::datapath {

// What the namespace's datapath holds, read from its maps without loading programs (for
// observation and `etherctl status`). Empty when no tunnel is configured.
std::vector<TunnelStatus> inspect(const Options& options = {});

// True when an interrupted run left datapath state that no tunnel interface accounts for:
// an entry whose eip device is gone (or is another device now), or pinned maps without any
// tunnel. Cheap (reads the maps); Datapath::prune() repairs it.
bool needs_pruning(const Options& options = {});

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
  // prepare_links in host.hpp). Idempotent.
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
  int encap_port_fd() const;
  int decap_fd() const;

 private:
  struct Impl;
  explicit Datapath(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace etherctl::datapath
