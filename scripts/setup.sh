#!/usr/bin/env bash
# Installs every Debian 12 package etherctl needs to build, test and run its demo.
# Idempotent: skips apt entirely when everything is already installed.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config clang llvm bpftool
  libclang-rt-dev  # clang's sanitizer and libFuzzer runtimes (the sanitize preset, tests/fuzz)
  libmnl-dev libnl-3-dev libnl-route-3-dev libnl-genl-3-dev libbpf-dev
  nlohmann-json3-dev libssl-dev libboost-dev libcli11-dev libfmt-dev libsystemd-dev
  libgtest-dev libgmock-dev
  # kernel tests, oracles and the lab
  iproute2 iputils-ping iputils-arping ethtool tshark tcpdump python3 python3-scapy iperf3 ipvsadm jq
  keepalived
  # schema, packaging and Ansible tests
  python3-jsonschema python3-yaml lintian ansible-core systemd
  # the stock-kernel test VM
  qemu-system-x86 busybox-static cpio kmod
  # IPsec (issue 12): charon with the VICI plugin, swanctl (a test oracle and the peer configured
  # by hand), the openssl/gcm plugins for AES-GCM and ECDH groups in IKE; openssl for test PKIs
  strongswan-charon strongswan-swanctl libstrongswan-standard-plugins openssl
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: installing them needs root: run it as root (or with sudo, e.g." \
      "sudo $0)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
