#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs packages, builds,
# runs every test (unit, host-kernel in throwaway network namespaces, stock-kernel VM).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh default
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
