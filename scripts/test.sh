#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs packages, builds,
# runs every test (unit, host-kernel in throwaway network namespaces, stock-kernel VM), then
# a Release build (the "release" preset: -O3 as users and packagers build it, warnings as
# errors, so that it stays warning-free; a build only, the tests above cover the code;
# ETHERCTL_RELEASE_STAGE=0 skips it), then the sanitizer stage (scripts/test-sanitize.sh: a
# clang ASan + UBSan build, the fuzzer and the tests that run etherctl's own code;
# ETHERCTL_SANITIZE_STAGE=0 skips it). Arguments go to the first ctest. Fails when any stage
# fails; all always run.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
if [[ $EUID -ne 0 ]]; then
  echo "test.sh: the tests create network namespaces and load BPF programs: run it as root" \
    "(or with sudo: sudo scripts/test.sh)" >&2
  exit 1
fi
scripts/setup.sh
scripts/build.sh default
rc=0
(cd build && ctest --output-on-failure -j"$(nproc)" "$@") || rc=$?
echo "test.sh: default build and tests: $((SECONDS - started)) s"
if [[ ${ETHERCTL_RELEASE_STAGE:-1} != 0 ]]; then
  release_started=$SECONDS
  scripts/build.sh release || rc=$?
  echo "test.sh: release build (-O3, warnings as errors): $((SECONDS - release_started)) s"
fi
if [[ ${ETHERCTL_SANITIZE_STAGE:-1} != 0 ]]; then
  scripts/test-sanitize.sh || rc=$?
fi
echo "test.sh: $((SECONDS - started)) s in all, $( ((rc == 0)) && echo passed || echo FAILED)"
exit "$rc"
