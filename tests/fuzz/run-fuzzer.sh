#!/usr/bin/env bash
# Runs a libFuzzer target for a bounded time on a scratch copy of its seed corpus and reports the
# number of executions. Exit status: the fuzzer's (0: no crash, leak, timeout or broken invariant).
#
# Usage: run-fuzzer.sh FUZZER SECONDS DICTIONARY SEED_DIR...
#   every *.json file under the SEED_DIRs is a seed; the copy grows during the run and is
#   removed afterwards; a crashing input is kept as ./artifacts/crash-<sha1> (and printed).
# Environment: ETHERCTL_FUZZ_SECONDS overrides SECONDS; ETHERCTL_FUZZ_SEED (default 1) is
#   libFuzzer's -seed: with the same seed, corpus and binary, runs explore in the same order
#   (the time bound still decides where a run stops). Replay one input: FUZZER <file>.
set -euo pipefail
fuzzer=$1 seconds=${ETHERCTL_FUZZ_SECONDS:-$2} dict=$3
shift 3
seed=${ETHERCTL_FUZZ_SEED:-1}

work=$(mktemp -d /tmp/etherctl-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
n=0
while IFS= read -r -d '' file; do
  cp "$file" "$work/corpus/seed-$n-$(basename "$file")"  # examples/**/site.json share a name
  n=$((n + 1))
done < <(find "$@" -type f -name '*.json' -print0 | sort -z)
mkdir -p artifacts

echo "$(basename "$fuzzer"): ${seconds} s, seed $seed, $n seed files, dictionary $(basename "$dict")"
set +e
"$fuzzer" -max_total_time="$seconds" -seed="$seed" -dict="$dict" -rss_limit_mb=1536 \
  -timeout=30 -max_len=16384 -use_value_profile=1 -print_final_stats=1 \
  -artifact_prefix="$PWD/artifacts/" "$work/corpus" >"$work/log" 2>&1
rc=$?
set -e

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
grown=$(find "$work/corpus" -type f | wc -l)
if ((rc != 0)); then
  # the report (invariant, sanitizer or libFuzzer's own) and the input that caused it
  grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)|^\s+NEW_FUNC' "$work/log" | tail -n 120
  echo "$(basename "$fuzzer"): FAILED (exit $rc) after ${runs:-?} executions; input kept in $PWD/artifacts/"
  exit "$rc"
fi
grep -E '^(INFO: Seed|INFO: -max_len|#[0-9]+\s+(INITED|DONE)|Done )' "$work/log" || true
echo "$(basename "$fuzzer"): ${runs:-?} executions in ${seconds} s, corpus $n -> $grown files, no crash"
