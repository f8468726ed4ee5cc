#!/usr/bin/env bash
# Runs every test of winipam from a clean checkout: static checks, unit and property tests of the
# pure core, EC2 adapter tests against moto, controller tests against a real etcd +
# kube-apiserver, and the chart on a whole cluster with a real node (scripts/cluster.sh; needs
# root). Everything it needs is built or installed on first use and cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/winipam, so a second run costs only the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/winipam"
mkdir -p "$cache"
# One target dir outside the checkout: CI and later runs reuse the (heavy) AWS SDK build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

step() { printf '\n==> %s\n' "$*"; }

# Test dependencies. Each script prints `export NAME=value` lines for the harness in tests/support.
# scripts/vpcrc.sh builds the real VPC Resource Controller (Go, about 10 min cold) for the tests
# that run it.
for dep in scripts/controlplane.sh scripts/moto.sh scripts/helm.sh scripts/promtool.sh scripts/vpcrc.sh; do
  if [ -x "$dep" ]; then
    step "preparing $(basename "$dep" .sh)"
    env_lines=$("$dep" env)
    eval "$env_lines"
  fi
done

# The whole cluster of tests/cluster: node binaries, KWOK and Debian packages (containerd, runc,
# CNI plugins, umoci, skopeo). The tests start and stop the cluster themselves; a run cut short
# is cleaned up on exit.
step "preparing cluster"
scripts/cluster.sh build
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

# clippy with --all-targets resolves the same features as `cargo test`, so the dependency graph
# is built once for both.
step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

# Library, binary and integration tests (the crate has no doc tests to run). Every test binary
# runs even when an earlier one fails, so one failure does not hide the rest.
step "cargo test"
log=$(mktemp)
trap 'rm -f "$log"; scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
set +e
cargo test --locked --no-fail-fast --lib --bins --tests -- "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run, summed over the test binaries.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\nwinipam: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
