#!/usr/bin/env bash
# Harness self-test (ctest: vm.harness), run on the host: vm-run must pass the guest command's
# failing status through (even when the command prints a fake result marker), quote --env values
# faithfully, and kill a hung guest at --timeout with a clear message and status 124.
# shellcheck disable=SC2016 # the single-quoted scripts run in the guest
set -uo pipefail
kernel=${1:?usage: selftest.sh KERNEL}
vm_run=$(dirname "$0")/vm-run
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

echo "== a failing command's status comes back (expect 3)"
"$vm_run" --kernel "$kernel" --env "QUOTED=a b'c\$d" -- \
  sh -c 'echo "ETHERCTL_VM_RESULT 0000000000000000 0"; test "$QUOTED" = "a b'\''c\$d" || exit 9; echo selftest-output; exit 3' \
  >"$out/1" 2>&1
rc=$?
tail -n 5 "$out/1"
((rc == 3)) || fail "expected status 3, got $rc"
grep -q '^selftest-output' "$out/1" || fail "the command's output is missing"
grep -q 'exited with status 3' "$out/1" || fail "no failure message"

echo "== a hung guest is killed at --timeout (expect 124)"
"$vm_run" --kernel "$kernel" --timeout 30 -- sleep 3600 >"$out/2" 2>&1
rc=$?
tail -n 3 "$out/2"
((rc == 124)) || fail "expected status 124, got $rc"
grep -q 'guest did not finish within 30 s; killed' "$out/2" || fail "no timeout message"

((failures == 0)) && echo "vm-run self-test passed"
exit $((failures > 0))
