#!/usr/bin/env bash
# A local cluster to run the controller against by hand: the control plane of the tests
# (etcd + kube-apiserver, see controlplane.sh) and, when scripts/moto.sh exists, the moto EC2
# emulator, all on 127.0.0.1 in the background.
#
#   dev-cluster.sh up      start everything; print `export ...` lines (KUBECONFIG, AWS_*)
#   dev-cluster.sh env     print those lines again
#   dev-cluster.sh down    stop exactly the processes `up` started
#
# Typical use: eval "$(scripts/dev-cluster.sh up)"; kubectl get nodes; scripts/dev-cluster.sh down
# State (pids, logs, certificates) lives in ${XDG_STATE_HOME:-$HOME/.local/state}/winipam/dev-cluster.
set -euo pipefail

scripts=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=controlplane.sh
source "$scripts/controlplane.sh"

state="${XDG_STATE_HOME:-$HOME/.local/state}/winipam/dev-cluster"

log() { printf 'dev-cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# True if PID runs and its command line contains PATTERN: a recorded pid may have been reused
# by an unrelated process since.
runs() {
  local args
  args=$(ps -p "$1" -o args= 2>/dev/null) || return 1
  case "$args" in *"$2"*) return 0 ;; *) return 1 ;; esac
}

# Stops PID (if it still runs PATTERN): SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  local pid=$1 pattern=$2 i
  runs "$pid" "$pattern" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do
    runs "$pid" "$pattern" || return 0
    sleep 0.1
  done
  log "$pattern ($pid) ignored SIGTERM, killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

is_up() {
  [ -f "$state/controlplane.pid" ] && runs "$(cat "$state/controlplane.pid")" controlplane.sh
}

start_controlplane() {
  local exports
  exports=$("$scripts/controlplane.sh" env)
  eval "$exports"
  # Its own session: no signal from this terminal reaches it; `down` stops it.
  setsid "$scripts/controlplane.sh" run "$state/controlplane" </dev/null >"$state/controlplane.out" 2>&1 &
  echo $! >"$state/controlplane.pid"
  local i
  for i in $(seq 1200); do
    if grep -qx ready "$state/controlplane.out"; then
      cp "$state/controlplane/pids" "$state/controlplane.children"
      return
    fi
    runs "$(cat "$state/controlplane.pid")" controlplane.sh || break
    sleep 0.1
  done
  cat "$state/controlplane.out" >&2
  die "the control plane did not start"
}

start_moto() {
  local exports
  exports=$("$scripts/moto.sh" env)
  eval "$exports"
  [ -n "${WINIPAM_MOTO_SERVER_BIN:-}" ] || die "scripts/moto.sh env did not set WINIPAM_MOTO_SERVER_BIN"
  local port i
  taken_ports=
  port=$(free_port)
  setsid "$WINIPAM_MOTO_SERVER_BIN" -H 127.0.0.1 -p "$port" </dev/null >"$state/moto.log" 2>&1 &
  echo $! >"$state/moto.pid"
  for i in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      cat >>"$state/env" <<EOF
export AWS_ENDPOINT_URL_EC2=http://127.0.0.1:$port
export AWS_REGION=us-west-2
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
EOF
      return
    fi
    runs "$(cat "$state/moto.pid")" "$WINIPAM_MOTO_SERVER_BIN" || break
    sleep 0.1
  done
  cat "$state/moto.log" >&2
  die "moto did not start"
}

up() {
  if is_up; then
    log "already up"
    cat "$state/env"
    return
  fi
  # Leftovers of an earlier `up` (say, the runner was killed): stop what still runs.
  if [ -d "$state" ]; then down >/dev/null 2>&1; fi
  mkdir -p "$state"
  # A failed start must not leave half a cluster running.
  trap 'down >/dev/null 2>&1' EXIT
  start_controlplane
  {
    printf 'export KUBECONFIG=%q\n' "$state/controlplane/kubeconfig"
    # The kubectl matching the server, first on PATH (a fresh machine may have none).
    printf 'export PATH=%q:"$PATH"\n' "$(dirname "$WINIPAM_KUBECTL_BIN")"
  } >"$state/env"
  if [ -x "$scripts/moto.sh" ]; then
    start_moto
  else
    log "no scripts/moto.sh: not starting moto"
  fi
  trap - EXIT
  log "up; stop with: $0 down"
  cat "$state/env"
}

down() {
  local pid name
  if [ -f "$state/moto.pid" ]; then
    stop_pid "$(cat "$state/moto.pid")" moto
  fi
  if [ -f "$state/controlplane.pid" ]; then
    # The runner kills etcd and kube-apiserver when it stops; make sure they are gone.
    stop_pid "$(cat "$state/controlplane.pid")" controlplane.sh
    if [ -f "$state/controlplane.children" ]; then
      while read -r name pid; do
        [ "$name" = runner ] || stop_pid "$pid" "$name"
      done <"$state/controlplane.children"
    fi
  fi
  rm -rf "$state"
  log "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) is_up || die "not up: run $0 up"; cat "$state/env" ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
