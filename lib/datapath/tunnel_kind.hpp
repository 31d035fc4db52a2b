// Kind "tunnel" of the kernel layer: an EtherIP tunnel is a veth pair (the bridge port T and
// "eip-T" with the programs) plus its entry in the datapath's maps. Attributes: those of
// lib/plan/object.hpp, plus the optional booleans "fast_path" and "clamp_tcp_mss" (TunnelSpec).
// Register it at start-up:
//   etherctl::kernel::register_kind(etherctl::datapath::tunnel_kind_ops());
#pragma once

#include "kernel/kind.hpp"

namespace etherctl::datapath {

const kernel::KindOps& tunnel_kind_ops();

}  // namespace etherctl::datapath
