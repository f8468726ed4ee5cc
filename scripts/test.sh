#!/usr/bin/env bash
# Runs every test of winipam from a clean checkout: static checks, unit and property tests of the
# pure core, EC2 adapter tests against moto, and controller tests against a real etcd +
# kube-apiserver. Everything it needs is built or installed on first use and cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/winipam, so a second run costs only the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/winipam"
mkdir -p "$cache"
# One target dir outside the checkout: CI and later runs reuse the (heavy) AWS SDK build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

step() { printf '\n==> %s\n' "$*"; }

# Test dependencies. Each script prints `export NAME=value` lines for the harness in tests/support.
for dep in scripts/controlplane.sh scripts/moto.sh scripts/helm.sh; do
  if [ -x "$dep" ]; then
    step "preparing $(basename "$dep" .sh)"
    env_lines=$("$dep" env)
    eval "$env_lines"
  fi
done

step "cargo fmt --check"
cargo fmt --all -- --check

# clippy with --all-targets resolves the same features as `cargo test`, so the dependency graph
# is built once for both.
step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test"
cargo test --locked -- "$@"
