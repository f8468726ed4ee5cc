#!/usr/bin/env bash
# Prepares the EC2 emulator the adapter tests run against: moto's server, pinned, in a virtualenv
# cached under ${XDG_CACHE_HOME:-$HOME/.cache}/winipam so a warm run costs a second.
#
#   scripts/moto.sh env   installs if needed, then prints `export WINIPAM_MOTO_SERVER_BIN=...`
#                         on stdout (progress goes to stderr, so `eval "$(scripts/moto.sh env)"`
#                         works).
set -euo pipefail

# Pinned: the tests encode this version's behaviour (it returns every address of the ENI from
# AssignPrivateIpAddresses, ignores prefixes and per-ENI limits).
MOTO_VERSION="5.2.5"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/winipam"
venv="$cache/moto-venv"
stamp="$venv/.winipam-moto-$MOTO_VERSION"
bin="$venv/bin/moto_server"

log() { printf 'moto: %s\n' "$*" >&2; }

install() {
  local python
  python=$(command -v python3 || true)
  if [ -z "$python" ]; then
    log "python3 not found; install Python 3.9+ to run the EC2 adapter tests"
    exit 1
  fi
  log "creating $venv (moto[ec2,server]==$MOTO_VERSION)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  # pip honours PIP_FIND_LINKS (a local wheel directory) if the environment sets one.
  "$venv/bin/python" -m pip install --quiet "moto[ec2,server]==$MOTO_VERSION" >&2
  "$bin" --help >/dev/null 2>&1 || { log "moto_server does not start"; exit 1; }
  touch "$stamp"
  log "ready"
}

case "${1:-env}" in
  env)
    if [ ! -f "$stamp" ] || [ ! -x "$bin" ]; then
      install
    else
      log "cached at $venv"
    fi
    printf 'export WINIPAM_MOTO_SERVER_BIN=%q\n' "$bin"
    ;;
  *)
    echo "usage: $0 env" >&2
    exit 2
    ;;
esac
