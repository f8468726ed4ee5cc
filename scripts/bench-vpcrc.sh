#!/usr/bin/env bash
# The benchmark against the real VPC Resource Controller (issue 17, item 4; docs/benchmarks.md):
# the same workloads (W1 burst, W2 churn) played against the real controller and against
# `winipam run`, each run in a test process of its own (fresh apiserver with an audit log, moto,
# and the EC2 proxy playing SPEC 12's latency and account throttling).
#
#   scripts/bench-vpcrc.sh [OUT_DIR] [TEST_FILTER...]
#
# One JSON per run and table.md go to OUT_DIR (default target/bench-vpcrc under
# $CARGO_TARGET_DIR or ./target). TEST_FILTER picks runs (default: all four bench_w* tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target=${CARGO_TARGET_DIR:-target}
out=${1:-$target/bench-vpcrc}
shift || true
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(bench_w1_burst_vpcrc bench_w1_burst_winipam bench_w2_churn_vpcrc bench_w2_churn_winipam)

eval "$(scripts/controlplane.sh env)"
eval "$(scripts/moto.sh env)"
eval "$(scripts/helm.sh env)"
scripts/vpcrc.sh build
eval "$(scripts/vpcrc.sh env)"

started=$(date +%s)
cargo test --locked --test it --no-run
mkdir -p "$out"
export WINIPAM_BENCH_OUT WINIPAM_APISERVER_AUDIT=1
WINIPAM_BENCH_OUT=$(cd "$out" && pwd)
for run in "${runs[@]}"; do
  echo "bench-vpcrc: $run ($(uptime))" >&2
  cargo test --locked --test it "vpcrc_bench::$run" -- --exact --ignored --nocapture --test-threads=1
done
cargo test --locked --test it vpcrc_bench::bench_table -- --exact --ignored --nocapture --quiet
echo "bench-vpcrc: done in $(( $(date +%s) - started )) s; results in $WINIPAM_BENCH_OUT" >&2
