#!/usr/bin/env bash
# Harness self-test, run inside the stock-kernel guest by vm-run (ctest: vm.<kernel>.features).
# Proves that the guest offers what the kernel tests rely on: VLAN devices on a veth, a bridge with
# VLAN filtering, IPVS with the wlc scheduler, clsact + cls_bpf, network namespaces (/run/netns),
# bpffs, a writable /tmp, and that a binary from the build tree runs (argument 1, optional).
# Everything happens in a throwaway network namespace; prints TAP-like lines, fails on any miss.
# shellcheck disable=SC2016,SC2317 # single-quoted scripts run in the guest; check() calls functions
set -uo pipefail

probe=${1:-}
failures=0
n=0
check() { # check DESCRIPTION COMMAND...
  local desc=$1 out
  shift
  n=$((n + 1))
  if out=$("$@" 2>&1); then
    echo "ok $n - $desc"
  else
    echo "not ok $n - $desc"
    [[ -z $out ]] || while IFS= read -r line; do echo "#   $line"; done <<<"$out"
    failures=$((failures + 1))
  fi
}
grep_q() { # grep_q PATTERN COMMAND...: COMMAND's output contains PATTERN
  local pattern=$1 out
  shift
  out=$("$@" 2>&1) || { echo "$out"; return 1; }
  grep -qE -- "$pattern" <<<"$out" || { echo "expected /$pattern/ in:"; echo "$out"; return 1; }
}

# The network checks run in a second copy of this script inside the namespace (one
# `ip netns exec` instead of one per command: each costs a fork and a sysfs mount under TCG).
if [[ ${FEATURES_PHASE:-} == in-netns ]]; then
  n=$FEATURES_N failures=$FEATURES_FAILURES
  network_checks() {
    check "loopback up in the namespace" ip link set lo up
    check "veth pair" ip link add v0 type veth peer name v1
    check "VLAN device on a veth (802.1Q id 100)" ip link add link v0 name v0.100 type vlan id 100
    check "VLAN device reports id 100" grep_q 'vlan protocol 802\.1Q id 100 ' ip -d link show v0.100
    check "VLAN MTU change in place" ip link set v0.100 mtu 1400
    check "VLAN parent up" ip link set v0 up
    check "VLAN device up" ip link set v0.100 up
    check "VLAN device removal" ip link del v0.100

    check "bridge with vlan_filtering 1" ip link add br0 type bridge vlan_filtering 1
    check "bridge reports vlan_filtering 1" grep_q 'vlan_filtering 1 ' ip -d link show br0
    check "enslave a veth to the VLAN-aware bridge" ip link set v1 master br0
    check "bridge vlan add vid 100 on the port" bridge vlan add dev v1 vid 100
    check "bridge vlan show lists vid 100" grep_q '(^|[[:space:]])100([[:space:]]|$)' bridge vlan show dev v1

    check "ipvsadm -A -t 192.0.2.1:80 -s wlc" ipvsadm -A -t 192.0.2.1:80 -s wlc
    check "ipvsadm -a real server (masquerade)" ipvsadm -a -t 192.0.2.1:80 -r 192.0.2.10:80 -m -w 2
    check "ipvsadm -Ln shows the service" grep_q 'TCP  192\.0\.2\.1:80 wlc' ipvsadm -Ln
    for s in rr wrr lc sh; do
      check "IPVS scheduler $s" ipvsadm -A -u 192.0.2.1:53 -s "$s"
      ipvsadm -D -u 192.0.2.1:53 2>/dev/null
    done

    check "tc qdisc add dev v0 clsact" tc qdisc add dev v0 clsact
    check "clsact is listed" grep_q 'qdisc clsact ' tc qdisc show dev v0
    check "cls_bpf filter on clsact ingress" tc filter add dev v0 ingress bpf bytecode '1,6 0 0 0,'
    check "cls_bpf filter is listed" grep_q 'bpf' tc filter show dev v0 ingress

    if [[ -d /sys/module/vxlan ]]; then
      check "vxlan device" ip link add vx0 type vxlan id 42 dstport 4789 local 127.0.0.1
    else
      echo "# vxlan: not available in this kernel (optional)"
    fi
  }
  network_checks
  echo "1..$n"
  if ((failures)); then
    echo "# $failures of $n checks failed on $(uname -r)"
    exit 1
  fi
  echo "# all $n checks passed on $(uname -r)"
  exit 0
fi

echo "# kernel $(uname -r)"
check "running inside the vm-run guest (ETHERCTL_IN_VM=1)" test "${ETHERCTL_IN_VM:-}" = 1
check "ETHERCTL_REQUIRE_ALL_FEATURES=1 passed through" test "${ETHERCTL_REQUIRE_ALL_FEATURES:-}" = 1
if [[ -n ${ETHERCTL_VM_EXPECT_CWD:-} ]]; then
  check "working directory is the caller's ($ETHERCTL_VM_EXPECT_CWD)" test "$PWD" = "$ETHERCTL_VM_EXPECT_CWD"
fi
if [[ -n $probe ]]; then
  probe_says() {
    local out
    out=$("$probe") || return 1
    [[ $out == "etherctl_vm_probe $(uname -r)" ]] || { echo "unexpected: $out"; return 1; }
  }
  check "a build-tree binary runs and sees the guest kernel" probe_says
fi
check "bpffs is mounted on /sys/fs/bpf" grep_q '^bpf /sys/fs/bpf bpf ' cat /proc/mounts
check "bpffs is writable (names without dots)" sh -c 'd=/sys/fs/bpf/vmfeatures$$ && mkdir "$d" && rmdir "$d"'
check "/tmp is writable" sh -c 'f=$(mktemp) && echo x >"$f" && rm "$f"'
check "the host root is read-only" sh -c '! touch /etc/etherctl-vm-write-test 2>/dev/null'

ns=vmfeat$$
check "ip netns add" ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null' EXIT
check "/run/netns holds the namespace" test -e "/run/netns/$ns"
ip netns exec "$ns" env FEATURES_PHASE=in-netns FEATURES_N="$n" FEATURES_FAILURES="$failures" \
  "$0" "$probe"
rc=$?
((rc == 0 || rc == 1)) || echo "not ok - the in-namespace checks did not run (status $rc)"
exit $((rc != 0))
