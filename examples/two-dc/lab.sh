#!/usr/bin/env bash
# The two-data-center lab in network namespaces (see examples/two-dc/site.json).
#
#   lab.sh up                         build the lab (idempotent; completes a partial lab)
#   lab.sh down                       remove every namespace of the lab (also after a partial up)
#   lab.sh migrate VM [--to dcN] [--rarp|--announce garp|rarp|both|none]
#                                     move VM's vNIC to the other (or the given) hypervisor and
#                                     announce it: gratuitous ARP (default) or RARP (as vMotion)
#   lab.sh status                     where everything is
#   lab.sh ns NODE                    print the namespace name of NODE (dc1-edge, wan, vm1, ...)
#
# Environment: LAB (namespace prefix, default "eclab"; give each parallel run its own).
#
# Topology (every name below is a namespace "<LAB>-<name>"):
#
#   vm1, vm3 ─ dc1-hv(br0) ─ eth1 [dc1-edge] eth0 ─ dc1 [wan router] dc2 ─ eth0 [dc2-edge] eth1 ─ dc2-hv(br0) ─ vm2
#                                               198.51.100.254   203.0.113.254
#
# The edges' eth0/eth1 are left unconfigured: etherctl configures them from site.json. The WAN
# router forwards with MTU 1500 on both sides, so the WAN is a real 1500-byte path (a veth alone
# passes GSO packets and frames up to MTU + 18 bytes).
set -euo pipefail

LAB=${LAB:-eclab}
readonly LAB
readonly NODES=(dc1-edge dc2-edge wan dc1-hv dc2-hv vm1 vm2 vm3)
declare -A VM_IP=([vm1]=10.1.0.21 [vm2]=10.1.0.22 [vm3]=10.1.0.23)
declare -A VM_MAC=([vm1]=02:ec:00:00:00:21 [vm2]=02:ec:00:00:00:22 [vm3]=02:ec:00:00:00:23)
declare -A VM_HOME=([vm1]=dc1 [vm2]=dc2 [vm3]=dc1)

ns() { echo "${LAB}-$1"; }
log() { echo "lab[$LAB]: $*" >&2; }
die() { echo "lab[$LAB]: error: $*" >&2; exit 1; }

ns_exists() { [[ -e /run/netns/$1 ]]; }
link_exists() { ip -n "$1" link show dev "$2" >/dev/null 2>&1; }

ensure_ns() {
  local name; name=$(ns "$1")
  if ! ns_exists "$name"; then
    ip netns add "$name"
  fi
  ip -n "$name" link set lo up
}

# ensure_veth NODE_A IF_A NODE_B IF_B: a veth pair with one end in each namespace.
ensure_veth() {
  local a b; a=$(ns "$1"); b=$(ns "$3")
  if link_exists "$a" "$2" && link_exists "$b" "$4"; then
    return
  fi
  # half a pair (or a stale name) left by an interrupted run
  ip -n "$a" link del "$2" 2>/dev/null || true
  ip -n "$b" link del "$4" 2>/dev/null || true
  ip link add "$2" netns "$a" type veth peer name "$4" netns "$b"
}

ensure_bridge() {
  local n; n=$(ns "$1")
  if ! link_exists "$n" br0; then
    ip -n "$n" link add br0 type bridge stp_state 0 forward_delay 0
  fi
  ip -n "$n" link set br0 up
}

sysctl_ns() { ip netns exec "$1" sysctl -qw "$2=$3"; }

# Which hypervisor holds VM's port now (dc1 or dc2), empty when neither.
vm_location() {
  local dc
  for dc in dc1 dc2; do
    if ns_exists "$(ns "$dc-hv")" && link_exists "$(ns "$dc-hv")" "$1"; then
      echo "$dc"
      return
    fi
  done
}

ensure_vm() {
  local vm=$1 vmns; vmns=$(ns "$vm")
  ensure_ns "$vm"
  if ! link_exists "$vmns" eth0 || [[ -z $(vm_location "$vm") ]]; then
    ip -n "$vmns" link del eth0 2>/dev/null || true
    local dc
    for dc in dc1 dc2; do ip -n "$(ns "$dc-hv")" link del "$vm" 2>/dev/null || true; done
    ip link add eth0 netns "$vmns" type veth peer name "$vm" netns "$(ns "${VM_HOME[$vm]}-hv")"
  fi
  local hv; hv=$(ns "$(vm_location "$vm")-hv")
  ip -n "$hv" link set "$vm" master br0 up
  ip -n "$vmns" link set eth0 address "${VM_MAC[$vm]}"
  ip -n "$vmns" link set eth0 up
  ip -n "$vmns" addr replace "${VM_IP[$vm]}/24" dev eth0
}

cmd_up() {
  local node
  for node in "${NODES[@]}"; do ensure_ns "$node"; done
  local wan; wan=$(ns wan)
  # WAN: edge eth0 <-> router
  ensure_veth dc1-edge eth0 wan dc1
  ensure_veth dc2-edge eth0 wan dc2
  ip -n "$wan" link set dc1 mtu 1500 up
  ip -n "$wan" link set dc2 mtu 1500 up
  ip -n "$wan" addr replace 198.51.100.254/24 dev dc1
  ip -n "$wan" addr replace 203.0.113.254/24 dev dc2
  sysctl_ns "$wan" net.ipv4.ip_forward 1
  local dc
  for dc in dc1 dc2; do
    ip -n "$(ns "$dc-edge")" link set eth0 mtu 1500
    # server side: edge eth1 <-> hypervisor uplink, enslaved to the hypervisor's bridge
    ensure_bridge "$dc-hv"
    ensure_veth "$dc-edge" eth1 "$dc-hv" uplink
    ip -n "$(ns "$dc-hv")" link set uplink master br0 up
  done
  ensure_vm vm1
  ensure_vm vm2
  ensure_vm vm3
  log "up: namespaces ${NODES[*]/#/$LAB-}"
}

cmd_down() {
  local node name
  for node in "${NODES[@]}"; do
    name=$(ns "$node")
    if ns_exists "$name"; then
      ip netns del "$name"
    fi
  done
  log "down"
}

# announce VM KIND: the VM tells the network where it is now (raw frames, no extra packages).
announce() {
  local vm=$1 kind=$2
  ip netns exec "$(ns "$vm")" /usr/bin/python3 - "$kind" "${VM_IP[$vm]}" <<'PY'
import socket, struct, sys, time
kind, ip = sys.argv[1], socket.inet_aton(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
mac = s.getsockname()[4][:6]
bcast = b"\xff" * 6
frames = []
if kind in ("garp", "both"):
    # gratuitous ARP request, as `arping -U` sends it: sender = target = our IP
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\0" * 6, ip)
    frames.append(bcast + mac + struct.pack("!H", 0x0806) + arp)
if kind in ("rarp", "both"):
    # RARP "request reverse" (opcode 3) as vMotion sends it: addresses 0.0.0.0, our MAC twice
    rarp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 3, mac, b"\0" * 4, mac, b"\0" * 4)
    frames.append(bcast + mac + struct.pack("!H", 0x8035) + rarp)
for i in range(3):
    for f in frames:
        s.send(f.ljust(60, b"\0"))
    time.sleep(0.05)
PY
}

wait_oper_up() {
  local n=$1 dev=$2 i
  for ((i = 0; i < 200; i++)); do
    if ip -n "$n" -o link show dev "$dev" 2>/dev/null | grep -q "state UP"; then return 0; fi
    sleep 0.01
  done
  log "warning: $dev in $n not operationally up"
}

cmd_migrate() {
  local vm="" to="" kind=garp
  while (($#)); do
    case $1 in
      --to) to=${2:?--to needs dc1 or dc2}; shift 2 ;;
      --rarp) kind=rarp; shift ;;
      --garp) kind=garp; shift ;;
      --announce) kind=${2:?--announce needs garp, rarp, both or none}; shift 2 ;;
      -*) die "migrate: unknown option $1" ;;
      *) [[ -z $vm ]] || die "migrate: one VM at a time"; vm=$1; shift ;;
    esac
  done
  [[ -n $vm && -n ${VM_IP[$vm]:-} ]] || die "migrate: which VM? (${!VM_IP[*]})"
  [[ $kind =~ ^(garp|rarp|both|none)$ ]] || die "migrate: --announce garp|rarp|both|none"
  local from; from=$(vm_location "$vm")
  [[ -n $from ]] || die "migrate: $vm is on no hypervisor (lab not up?)"
  if [[ -z $to ]]; then
    [[ $from == dc1 ]] && to=dc2 || to=dc1
  fi
  [[ $to == dc1 || $to == dc2 ]] || die "migrate: --to dc1 or dc2"
  local dst; dst=$(ns "$to-hv")
  if [[ $from != "$to" ]]; then
    # what a hypervisor does with a vNIC: unplug it here, plug it into the bridge there
    ip -n "$(ns "$from-hv")" link set "$vm" netns "$dst"
    ip -n "$dst" link set "$vm" master br0 up
    log "migrate: $vm moved from $from-hv to $to-hv"
  else
    log "migrate: $vm already on $to-hv"
  fi
  wait_oper_up "$(ns "$vm")" eth0
  if [[ $kind != none ]]; then
    announce "$vm" "$kind"
    log "migrate: $vm announced itself ($kind)"
  fi
}

cmd_status() {
  local node name
  for node in "${NODES[@]}"; do
    name=$(ns "$node")
    if ns_exists "$name"; then
      echo "== $name"
      ip -n "$name" -br addr show | grep -v '^lo ' || true
    else
      echo "== $name (absent)"
    fi
  done
  local vm
  for vm in vm1 vm2 vm3; do
    echo "$vm: on $(vm_location "$vm" || true)-hv"
  done
}

main() {
  (($# >= 1)) || { sed -n '2,12p' "$0" >&2; exit 64; }
  [[ $LAB =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || die "LAB must be a short name"
  local cmd=$1; shift
  case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    migrate) cmd_migrate "$@" ;;
    status) cmd_status ;;
    ns) ns "${1:?ns NODE}" ;;
    *) sed -n '2,12p' "$0" >&2; exit 64 ;;
  esac
}

main "$@"
