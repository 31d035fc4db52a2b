#!/usr/bin/env bash
# The README's demo, as root on a fresh Debian 12 machine: installs packages, builds etherctl,
# builds the two-data-center lab in network namespaces (examples/two-dc), applies the site file
# on both edges, sends traffic across the EtherIP tunnel, live-migrates a VM with a TCP
# connection open and shows that the connection survived, runs `etherctl watch` and shows it
# repairing drift, then removes the lab.
#
# Environment: LAB (namespace prefix, default "ecdemo"); ETHERCTL=/path/to/etherctl skips the
# package set-up and the build and uses that binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export LAB=${LAB:-ecdemo}
LABSH=$ROOT/examples/two-dc/lab.sh
SITE=$ROOT/examples/two-dc/site.json
STREAM=$ROOT/examples/two-dc/stream.py
PY=/usr/bin/python3

if [[ -t 1 ]]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'; else B="" G="" R="" N=""; fi
section() { printf '\n%s==== %s ====%s\n' "$B" "$*" "$N"; }
run() { printf '%s$ %s%s\n' "$B" "$*" "$N"; "$@"; }
ok() { printf '%s✔ %s%s\n' "$G" "$*" "$N"; }
fail() { printf '%s✘ %s%s\n' "$R" "$*" "$N"; exit 1; }
ns() { echo "$LAB-$1"; }
# bytes dc1-edge's tunnel has encapsulated (etherctl status --json)
tunnel_tx() {
  "$ETHERCTL" --netns "$(ns dc1-edge)" --device dc1-edge --json status "$SITE" | "$PY" -c '
import json, sys
objects = json.load(sys.stdin)["status"]["objects"]
print(sum(o.get("counters", {}).get("tx_bytes", 0) for o in objects if o["kind"] == "tunnel"))'
}
in_ns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }

[[ $EUID -eq 0 ]] || fail "run me as root (network namespaces, BPF)"
started=$SECONDS

if [[ -z ${ETHERCTL:-} ]]; then
  section "Set-up: Debian packages and the build"
  run scripts/setup.sh
  run scripts/build.sh default
  ETHERCTL=$ROOT/build/cmd/etherctl/etherctl
fi
[[ -x $ETHERCTL ]] || fail "no etherctl at $ETHERCTL"
LOCKDIR=$(mktemp -d /tmp/etherctl-demo.XXXXXX)
export ETHERCTL_LOCK_DIR=$LOCKDIR

server_pid=""
agent_pid=""
cleanup() {
  local rc=$?
  section "Clean-up"
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
  [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  # destroy before deleting the namespaces: the datapath's pinned maps would outlive them
  for dc in dc1 dc2; do
    if [[ -e /run/netns/$(ns $dc-edge) && -x ${ETHERCTL:-} ]]; then
      run "$ETHERCTL" --netns "$(ns $dc-edge)" --device "$dc-edge" destroy "$SITE" || true
    fi
  done
  "$LABSH" down || true
  rm -rf "$LOCKDIR"
  if ((rc == 0)); then
    ok "demo finished in $((SECONDS - started)) s"
  else
    printf '%s✘ demo failed (exit %d)%s\n' "$R" "$rc" "$N"
  fi
}
trap cleanup EXIT

section "The lab: two data centers in network namespaces"
cat <<EOF
  vm1 ─ dc1-hv(br0) ─ [dc1-edge] ─ wan router (MTU 1500) ─ [dc2-edge] ─ dc2-hv(br0) ─ vm2
  VMs 10.1.0.21 (dc1) and 10.1.0.22 (dc2); the edges stretch 10.1.0.0/24 with EtherIP.
EOF
"$LABSH" down >/dev/null 2>&1 || true
run "$LABSH" up

section "etherctl apply on both edges"
for dc in dc1 dc2; do
  run "$ETHERCTL" --netns "$(ns $dc-edge)" --device "$dc-edge" apply "$SITE"
done
# apply returns once the tunnel ports forward in their bridges: traffic can start right away
for dc in dc1 dc2; do
  bridge -n "$(ns $dc-edge)" link show dev dcx
done
echo
echo "A second apply changes nothing:"
for dc in dc1 dc2; do
  run "$ETHERCTL" --netns "$(ns $dc-edge)" --device "$dc-edge" apply "$SITE"
done

section "Traffic across the tunnel"
run in_ns vm1 ping -c 3 -i 0.2 -w 10 10.1.0.22
run in_ns vm2 ping -c 3 -i 0.2 -w 10 10.1.0.21
echo
echo "Full-size frames (1500-byte IP packets, DF set in the VM) over the 1500-byte WAN:"
run in_ns vm1 ping -M do -s 1472 -c 3 -i 0.2 -w 10 10.1.0.22
run in_ns vm2 ping -M do -s 1472 -c 3 -i 0.2 -w 10 10.1.0.21
ok "vm1 and vm2 share one L2 segment across the WAN"

section "Live migration of vm1 from dc1 to dc2 with a TCP connection open"
echo "A TCP stream from dc1-edge's server self IP 10.1.0.1 to vm1: vm1 echoes every byte, the"
echo "client checks each echoed byte of a counter pattern and measures the longest stall."
out=$(mktemp /tmp/etherctl-demo-server.XXXXXX)
in_ns vm1 "$PY" "$STREAM" server --bind 10.1.0.21 >"$out" &
server_pid=$!
for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.05; done
client_out=$(mktemp /tmp/etherctl-demo-client.XXXXXX)
stop=$client_out.stop
in_ns dc1-edge "$PY" "$STREAM" client --source 10.1.0.1 --connect 10.1.0.21 \
  --duration 60 --stop-file "$stop" --rate 4000000 --timeout 20 --progress >"$client_out" &
client_pid=$!
sleep 3
tx_before=$(tunnel_tx)
run "$LABSH" migrate vm1 --to dc2
echo "vm1's MAC as dc1-edge's bridge now sees it:"
run ip netns exec "$(ns dc1-edge)" bridge fdb show br vmotion | grep -i 02:ec:00:00:00:21 || true
sleep 4  # the stream keeps going, now through the tunnel
touch "$stop"
echo "The stream's bytes through dc1-edge's tunnel since the move: $(($(tunnel_tx) - tx_before))"
set +e
wait "$client_pid"; client_rc=$?
wait "$server_pid"; server_pid=""
set -e
echo
echo "client: $(cat "$client_out")"
echo "server: $(grep -v listening "$out")"
rm -f "$out"
result=$(cat "$client_out"); rm -f "$client_out" "$stop"
field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$result" "$1"; }
if ((client_rc == 0)); then
  ok "the connection survived the migration: $(field echoed) bytes echoed and verified," \
     "no reset, no lost or corrupted byte; longest stall $(field longest_stall_ms) ms"
else
  fail "the connection did not survive: $(field error) (first bad byte: $(field first_bad_byte))"
fi
run "$LABSH" status

section "etherctl status on both edges"
for dc in dc1 dc2; do
  run "$ETHERCTL" --netns "$(ns $dc-edge)" --device "$dc-edge" status "$SITE"
done

section "etherctl watch: drift repaired from kernel events"
echo "The agent on dc1-edge; then someone deletes the tunnel and the server self IP behind its back."
agent_log=$(mktemp /tmp/etherctl-demo-agent.XXXXXX)
ip -n "$(ns dc1-edge)" link set lo up
"$ETHERCTL" --netns "$(ns dc1-edge)" --device dc1-edge watch --listen 127.0.0.1:9717 "$SITE" \
  2>"$agent_log" &
agent_pid=$!
for _ in $(seq 200); do grep -q "watching device" "$agent_log" && break; sleep 0.05; done
run ip -n "$(ns dc1-edge)" link del dcx
run ip -n "$(ns dc1-edge)" addr del 10.1.0.1/24 dev vmotion
for _ in $(seq 200); do
  ip -n "$(ns dc1-edge)" -br addr show dev vmotion 2>/dev/null | grep -q 10.1.0.1/24 &&
    ip -n "$(ns dc1-edge)" link show dev dcx >/dev/null 2>&1 && break
  sleep 0.05
done
sed 's/^/  agent: /' "$agent_log"
run in_ns vm2 ping -c 3 -i 0.2 -w 10 10.1.0.1
echo "Some of its metrics (Prometheus text on http://127.0.0.1:9717/metrics in dc1-edge's namespace):"
in_ns dc1-edge "$PY" -c 'import urllib.request
for line in urllib.request.urlopen("http://127.0.0.1:9717/metrics").read().decode().splitlines():
    if line.startswith(("etherctl_reconciles_total", "etherctl_reconcile_changes_total",
                        "etherctl_in_sync", "etherctl_tunnel_packets_total")):
        print("  " + line)'
kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=""
rm -f "$agent_log"
ok "the agent put back what was deleted, and dc2 reaches dc1-edge through the tunnel again"
