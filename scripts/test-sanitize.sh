#!/usr/bin/env bash
# The sanitizer stage of CI (scripts/test.sh runs it after the default build's tests), as root:
# builds the "sanitize" preset (clang, AddressSanitizer + UndefinedBehaviorSanitizer, every
# finding fatal, the fuzz targets) and runs the tests that run etherctl's own code:
#   unit, schema, schema.docs           (label unit)
#   fuzz.site                           (label fuzz; ETHERCTL_FUZZ_SECONDS, default 60)
#   kernel.kinds, kernel.location       (the kernel layer in throwaway namespaces)
#   kernel.cli, kernel.ipvs, agent.watch (Python driving the sanitized etherctl binary)
#   datapath.bpf, datapath.bpf_fuzz, datapath.tunnel_kind (the BPF loader and programs)
# Left out: the VM tests (label vm: the same binaries under qemu's TCG, 5-20x slower again, for
# kernel features, not for memory errors), the slow end-to-end tests (label e2e,
# datapath.e2e) and the Debian package (label package).
#
# Every sanitizer report goes to a file (log_path) as well as failing its process (abort), so
# that a report from a process whose exit status a test does not look at still fails the
# stage; the reports are printed at the end, each named by the executable and its pid
# (log_exe_name). An empty report file is printed and not counted as a finding: a sanitizer
# runtime creates its log file before it writes, and kernel.cli.crash kills etherctl with SIGKILL
# at random points (one CI run had such a file; every report of a finding has text). Likewise a
# report that only says "Unable to get registers from thread N", N being the process's own pid
# (the file's name ends in it): LeakSanitizer's leak check at exit runs in a tracer process of
# its own, which outlives a SIGKILL of the process it checks and can then only report that the
# process's main thread is gone (one CI run had such a file, all tests passed).
# LeakSanitizer suppressions, each with its reason: tests/sanitize/lsan.supp.
#
# Environment: ETHERCTL_SANITIZE_BUILD_DIR (default: the preset's build-sanitize/); extra
# arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS

build_dir=${ETHERCTL_SANITIZE_BUILD_DIR:-}
if [[ -n $build_dir ]]; then
  cmake --preset sanitize -B "$build_dir" >/dev/null
  cmake --build "$build_dir"
else
  scripts/build.sh sanitize
  build_dir=$root/build-sanitize
fi
built=$SECONDS

reports=$(mktemp -d /tmp/etherctl-sanitize.XXXXXX)
trap 'rm -rf "$reports"' EXIT
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1:check_initialization_order=1:strict_init_order=1:log_exe_name=1:log_path=$reports/sanitizer"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_exe_name=1:log_path=$reports/sanitizer"
export LSAN_OPTIONS="suppressions=$root/tests/sanitize/lsan.supp:print_suppressions=0"
# Timing bounds of performance tests hold for optimised builds; this one is -O0 with ASan
# (kernel.kinds' observe of 5000 objects: 60 ms optimised, 260 ms here).
export ETHERCTL_TIME_FACTOR=${ETHERCTL_TIME_FACTOR:-5}

cd "$build_dir"
rc=0
ctest --output-on-failure -j2 -L 'unit|fuzz|kernel' -LE 'vm|e2e|package' -E '^datapath\.e2e$' \
  "$@" || rc=$?

# The fuzzers' figures (executions, packets), from the tests' own output.
grep -hE '^(site_fuzzer: [0-9]+ executions|bpf fuzz: [0-9]+ packets tried)' \
  Testing/Temporary/LastTest.log 2>/dev/null | sed 's/^/sanitize: /' || true

shopt -s nullglob
found=()
for report in "$reports"/*; do
  pid=${report##*.}
  if [[ ! -s $report ]]; then
    echo "sanitize: ${report##*/} is empty (a process killed before it wrote): not a finding"
  elif ! grep -qvE "^(==[^=]+==[0-9]+==Unable to get registers from thread $pid\.)?\s*$" "$report"; then
    echo "sanitize: ${report##*/}: $(tr -s '\n' ' ' <"$report")(the leak check of a process" \
      "killed with SIGKILL as it exited): not a finding"
  else
    found+=("$report")
  fi
done
if ((${#found[@]})); then
  echo "sanitize: ${#found[@]} sanitizer report(s):"
  for report in "${found[@]}"; do
    echo "---- ${report##*/}"
    cat "$report"
  done
  rc=1
fi
echo "sanitize: build $((built - started)) s, tests $((SECONDS - built)) s," \
  "total $((SECONDS - started)) s ($( ((rc == 0)) && echo passed || echo FAILED))"
exit "$rc"
