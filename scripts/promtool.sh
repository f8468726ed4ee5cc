#!/usr/bin/env bash
# promtool, for the unit tests of the alerts (deploy/monitoring/alerts_test.yaml): taken from
# Debian's `prometheus` package and cached next to the other test tools. Only the promtool binary
# is extracted from the .deb (`apt-get download` + `dpkg-deb -x`): installing the package would
# pull ~100 MB of web assets and a Prometheus server service for one static binary.
#
#   promtool.sh install     fetch promtool if it is not cached yet
#   promtool.sh env         install if needed, then print `export WINIPAM_PROMTOOL_BIN=...`
#
# A promtool already on PATH is used as it is. Progress goes to stderr; stdout carries only what
# callers parse.
set -euo pipefail

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/winipam"
tool_root="$cache_root/promtool"

log() { printf 'promtool.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cached() { ls "$tool_root"/*/promtool 2>/dev/null | head -n 1; }

install() {
  if command -v promtool >/dev/null 2>&1 || [ -n "$(cached)" ]; then return; fi
  command -v apt-get >/dev/null 2>&1 || die "promtool is not on PATH and there is no apt-get to fetch it (install Prometheus' promtool)"
  mkdir -p "$tool_root"
  # Two callers at once must not fetch into the same place.
  exec 9>"$tool_root/.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if [ -n "$(cached)" ]; then return; fi
  local scratch
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"; trap - RETURN' RETURN
  # The package lists may be missing (fresh container) or stale (a 404 on the .deb): refresh
  # them once and try again.
  if ! (cd "$scratch" && apt-get download prometheus >&2 2>"$scratch/err"); then
    log "refreshing the package lists"
    apt-get update >&2 || die "apt-get update failed"
    (cd "$scratch" && apt-get download prometheus >&2) || die "apt-get download prometheus failed"
  fi
  local deb version
  deb=$(ls "$scratch"/prometheus_*.deb)
  version=$(dpkg-deb -f "$deb" Version)
  dpkg-deb -x "$deb" "$scratch/root"
  [ -x "$scratch/root/usr/bin/promtool" ] || die "$deb holds no usr/bin/promtool"
  "$scratch/root/usr/bin/promtool" --version >/dev/null 2>&1 || die "the extracted promtool does not run"
  mkdir -p "$tool_root/$version"
  mv "$scratch/root/usr/bin/promtool" "$tool_root/$version/promtool"
  log "promtool $version cached in $tool_root/$version"
}

print_env() {
  local bin
  bin=$(command -v promtool 2>/dev/null || cached)
  printf 'export WINIPAM_PROMTOOL_BIN=%q\n' "$bin"
}

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
  install) install ;;
  env) install; print_env ;;
  *) usage ;;
esac
