#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for N seconds (default 60), one after another, and prints
# per target the executions, the time and whether it found a crash. Not part of scripts/test.sh
# (CI has a time budget); see the "Fuzzing" section of README.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Builds in its
# own target dir (coverage instrumentation rebuilds every dependency), nice'd and on one job by
# default since the AWS SDK build is heavy; FUZZ_JOBS overrides the job count. No sanitizer by
# default: the code fuzzed is safe Rust and the targets look for panics and wrong answers;
# FUZZ_SANITIZER=address turns AddressSanitizer on. Inputs the fuzzer finds go to a working corpus
# under the cache; the seeds in fuzz/corpus stay as committed. Crashes land in fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
cache="${XDG_CACHE_HOME:-$HOME/.cache}/winipam"
export CARGO_TARGET_DIR="${WINIPAM_FUZZ_TARGET_DIR:-$cache/fuzz-target}"
export CARGO_BUILD_JOBS="${FUZZ_JOBS:-1}"
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz on the nightly toolchain is needed: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

nice -n 10 cargo +nightly fuzz build --sanitizer "$sanitizer"

failed=0
summary=()
for target in "${targets[@]}"; do
  work="$cache/fuzz-corpus/$target"
  log="$cache/fuzz-logs/$target.log"
  mkdir -p "$work" "$(dirname "$log")"
  echo "==> $target for ${seconds}s"
  start=$(date +%s)
  status=ok
  if ! nice -n 10 cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "$work" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 >"$log" 2>&1; then
    status="CRASH (see $log and fuzz/artifacts/$target)"
    failed=$((failed + 1))
  fi
  elapsed=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "$work" -type f | wc -l)
  line="$target: ${execs:-?} executions in ${elapsed}s (${rate:-?}/s), working corpus $corpus inputs: $status"
  echo "$line"
  summary+=("$line")
done

echo
printf '%s\n' "${summary[@]}"
echo "fuzz: ${#targets[@]} targets, $failed with crashes"
[ "$failed" -eq 0 ]
