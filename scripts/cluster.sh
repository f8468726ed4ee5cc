#!/usr/bin/env bash
# A whole single-node cluster on this host, for the chart tests and for trying winipam by hand:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, one real Linux node (kubelet on
# containerd, runc and the CNI bridge) that runs winipam's pods, KWOK for the Windows nodes, and
# moto as the EC2 the pods reach. Needs root (the kubelet, containerd and the bridge).
#
#   cluster.sh build          build and install what is missing (cached, see below)
#   cluster.sh up [--with-winipam]
#                             start the cluster in the background; print `export ...` lines.
#                             --with-winipam: then build the image and `helm install` winipam
#                             with two Windows nodes (scripts/cluster-winipam.sh)
#   cluster.sh env            print those lines again
#   cluster.sh down           stop it and undo every change to the host
#   cluster.sh run [--lifeline]
#       start the cluster in the foreground, print the exports and then `ready` on stdout, and
#       tear everything down on SIGTERM/SIGINT or, with --lifeline, when stdin reaches EOF (the
#       tests hold the other end, so a killed test run still leaves nothing behind).
#
# WINIPAM_CLUSTER_AUDIT=1 (env of `up`/`run`): the apiserver keeps an audit log of the writes of
# user winipam-controller (the identity of $WINIPAM_CLUSTER_CONTROLLER_KUBECONFIG, for a
# controller run on the host) in $WINIPAM_CLUSTER_AUDIT_LOG; the scale harness counts them.
#
# Typical use: eval "$(scripts/cluster.sh up)"; kubectl get nodes; scripts/cluster.sh down
#
# Binaries: the node's Kubernetes commands are built from the same module as the control plane
# (scripts/controlplane.sh), KWOK from its Go module, a pause binary from a few lines of Go; all
# cached under ${XDG_CACHE_HOME:-$HOME/.cache}/winipam/cluster. containerd, runc, the CNI plugins,
# umoci and skopeo come from Debian packages, installed when missing.
#
# Fixed names (the ClusterIP on the bridge, the kubelet's port, /kubepods, the bridge) mean one
# such cluster per host; its state lives in $WINIPAM_CLUSTER_DIR (default /var/tmp/winipam-cluster),
# and the logs of the last one in $WINIPAM_CLUSTER_DIR.last-logs.
set -euo pipefail

scripts=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=controlplane.sh
source "$scripts/controlplane.sh"
# shellcheck source=cluster-node.sh
source "$scripts/cluster-node.sh"

KWOK_VERSION=v0.8.0

cluster_cache="$cache_root/cluster"
node_bin="$cluster_cache/kubernetes-$KUBERNETES_VERSION-kwok-$KWOK_VERSION"
state="${WINIPAM_CLUSTER_DIR:-/var/tmp/winipam-cluster}"

# The networks: pods of the real node on the bridge, Services (only the `kubernetes` one is
# reachable: its ClusterIP is an address of the bridge), and KWOK's pod IPs (never routed).
BRIDGE=winipam0
BRIDGE_IP=10.88.0.1
# Locally administered, from BRIDGE_IP (see setup_bridge in cluster-node.sh).
BRIDGE_MAC=02:00:0a:58:00:01
POD_CIDR=10.88.0.0/24
SERVICE_CIDR=10.96.0.0/24
API_IP=10.96.0.1
KWOK_POD_CIDR=10.89.0.0/16
NODE_NAME=winipam-linux
MOTO_PORT=5055

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- build -----------------------------------------------------------------------------------

install_packages() {
  local missing=() cmd pkg
  for pair in containerd:containerd runc:runc umoci:umoci skopeo:skopeo iptables:iptables; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || die "missing Debian packages ${missing[*]}: install them as root"
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# The sandbox ("pause") container: waits for a signal and reaps children. No registry is
# reachable, so the image is built here from these lines.
build_pause() {
  local module="$cluster_cache/src/pause" out=$1
  mkdir -p "$module"
  cat >"$module/go.mod" <<'EOF'
module winipam.local/pause

go 1.26.0
EOF
  cat >"$module/main.go" <<'EOF'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			if pid, _ := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}
EOF
  go_build "$module" "" "$out" winipam.local/pause
}

build_kwok() {
  local out=$1 logfile="$cluster_cache/kwok-build.log"
  log "building kwok $KWOK_VERSION"
  # `go install module@version` builds with KWOK's own go.mod, as released.
  if ! GOFLAGS="-modcacherw -buildvcs=false" GOBIN="$out" "$go" install -trimpath -ldflags="-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >"$logfile" 2>&1; then
    tail -n 30 "$logfile" >&2
    die "go install kwok failed (log: $logfile)"
  fi
  # KWOK's own stages (kustomize/stage in its module): nodes Ready with lease heartbeats, pods
  # Running at once, deleted pods gone.
  local src stage
  src=$(GOFLAGS=-modcacherw "$go" mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$src/kustomize/stage" ] || die "no kustomize/stage in the kwok module ($src)"
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    echo '---'
    cat "$src/kustomize/stage/$stage.yaml"
  done >"$out/kwok-stages.yaml"
}

build() {
  install_packages
  "$scripts/controlplane.sh" build
  if [ -f "$node_bin/.complete" ]; then return; fi
  go=$(find_go)
  go_env
  mkdir -p "$cluster_cache"
  exec 8>"$cluster_cache/.build.lock"
  if command -v flock >/dev/null 2>&1; then flock 8; fi
  if [ -f "$node_bin/.complete" ]; then return; fi
  local start=$SECONDS tmp="$node_bin.tmp" module
  rm -rf "$tmp"
  mkdir -p "$tmp"
  module=$(kubernetes_module)
  log "building kubelet, kube-scheduler and kube-controller-manager $KUBERNETES_VERSION"
  go_build "$module" "$(kubernetes_stamp)" "$tmp" k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-controller-manager
  build_kwok "$tmp"
  build_pause "$tmp"
  "$scripts/image.sh" static "$tmp/pause" localhost/winipam-pause:1 "$tmp/pause.tar"
  touch "$tmp/.complete"
  rm -rf "$node_bin"
  mv "$tmp" "$node_bin"
  log "node binaries built in $((SECONDS - start)) s"
}

# --- certificates and kubeconfigs ------------------------------------------------------------

# A client kubeconfig for subject $2 (an openssl -subj), written to $1.
client_kubeconfig() {
  local name
  name=$(basename "$1" .kubeconfig)
  gen_key "$certs/$name.key"
  sign_cert "$certs/$name.crt" "$certs/$name.key" "$2" "keyUsage=critical,digitalSignature
basicConstraints=critical,CA:FALSE
extendedKeyUsage=clientAuth"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: winipam
  cluster:
    server: https://$API_IP:443
    certificate-authority-data: $(b64 "$certs/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(b64 "$certs/$name.crt")
    client-key-data: $(b64 "$certs/$name.key")
contexts:
- name: winipam
  context: {cluster: winipam, user: $name, namespace: default}
current-context: winipam
EOF
}

cluster_certs() {
  certs="$state/certs"
  mkdir -p "$certs"
  gen_key "$certs/ca.key"
  openssl req -x509 -new -key "$certs/ca.key" -subj "/CN=winipam-cluster-ca" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$certs/ca.crt" 2>/dev/null
  gen_key "$certs/apiserver.key"
  sign_cert "$certs/apiserver.crt" "$certs/apiserver.key" "/CN=kube-apiserver" \
    "subjectAltName=IP:$API_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
keyUsage=critical,digitalSignature
basicConstraints=critical,CA:FALSE
extendedKeyUsage=serverAuth"
  gen_key "$certs/sa.key"
  openssl pkey -in "$certs/sa.key" -pubout -out "$certs/sa.pub" 2>/dev/null
  client_kubeconfig "$state/admin.kubeconfig" "/O=system:masters/CN=winipam-admin"
  client_kubeconfig "$state/controller-manager.kubeconfig" "/CN=system:kube-controller-manager"
  client_kubeconfig "$state/scheduler.kubeconfig" "/CN=system:kube-scheduler"
  client_kubeconfig "$state/kubelet.kubeconfig" "/O=system:nodes/CN=system:node:$NODE_NAME"
  # The apiserver's identity towards the kubelet (logs, exec).
  client_kubeconfig "$state/apiserver-kubelet.kubeconfig" "/O=system:masters/CN=kube-apiserver-kubelet-client"
  # A controller run on the host (scripts/scale.sh): its own user, so the audit log tells its
  # writes from everyone else's.
  client_kubeconfig "$state/controller.kubeconfig" "/O=system:masters/CN=winipam-controller"
  # KWOK's: it writes Node status and pod status of the nodes it manages.
  client_kubeconfig "$state/kwok.kubeconfig" "/O=system:masters/CN=kwok"
}

# --- processes -------------------------------------------------------------------------------

# Starts $2... in the background with its log in $state/$1.log and its pid in $state/$1.pid.
spawn() {
  local name=$1
  shift
  "$@" </dev/null >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
}

alive() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

# Waits up to $2 s for `$3...` to succeed while process $1 lives.
wait_for() {
  local name=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    alive "$name" || { tail -n 30 "$state/$name.log" >&2; die "$name exited during startup"; }
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$state/$name.log" >&2; die "$name not ready in time"; }
    sleep 0.2
  done
}

kubectl_admin() { "$WINIPAM_KUBECTL_BIN" --kubeconfig="$state/admin.kubeconfig" "$@"; }

# The audit policy of WINIPAM_CLUSTER_AUDIT=1: one line per write of the host-run controller,
# nothing else (the log costs the apiserver little that way).
write_audit_policy() {
  cat >"$state/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: Metadata
  users: ["winipam-controller"]
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
EOF
}

start_control_plane() {
  local etcd_port peer_port audit=()
  if [ "${WINIPAM_CLUSTER_AUDIT:-}" = 1 ]; then
    write_audit_policy
    audit=(--audit-policy-file="$state/audit-policy.yaml" --audit-log-path="$state/audit.log" --audit-log-mode=blocking)
  fi
  taken_ports=
  etcd_port=$(free_port)
  peer_port=$(free_port)
  spawn etcd "$WINIPAM_ETCD_BIN" --name=winipam --data-dir="$state/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="winipam=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level=warn
  # Bound to the `kubernetes` Service's ClusterIP (an address of the bridge): pods reach it by
  # plain routing, with no kube-proxy. Aggregator routing makes the apiserver call webhooks at
  # their endpoints' pod IPs rather than the (unrouted) Service IPs.
  spawn kube-apiserver "$WINIPAM_KUBE_APISERVER_BIN" --bind-address="$API_IP" --advertise-address="$API_IP" \
    --secure-port=443 --etcd-servers="http://127.0.0.1:$etcd_port" --cert-dir="$state/apiserver" \
    --tls-cert-file="$certs/apiserver.crt" --tls-private-key-file="$certs/apiserver.key" \
    --client-ca-file="$certs/ca.crt" --authorization-mode=Node,RBAC \
    --kubelet-client-certificate="$certs/apiserver-kubelet.crt" --kubelet-client-key="$certs/apiserver-kubelet.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$certs/sa.pub" --service-account-signing-key-file="$certs/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --enable-aggregator-routing=true --kubelet-preferred-address-types=InternalIP \
    --enable-priority-and-fairness=false --profiling=false "${audit[@]}"
  wait_for kube-apiserver 90 kubectl_admin --request-timeout=2s get --raw=/readyz
  # A node is marked NotReady only after 25 minutes without a heartbeat (default 50 s). KWOK
  # keeps no node Lease (no --node-lease-duration-seconds: a renewal every 10 s per node would
  # load the apiserver of a 1,000-node run), and its heartbeat stage writes a node's status
  # every 600-610 s. With 2 minutes, KWOK nodes went NotReady for a few seconds every few
  # minutes (the node controller's "PartialDisruption", two or three times in each 5-minute R2
  # run), and their NoSchedule taint sent that moment's pods to the other nodes.
  # The clients of the controller-manager and the scheduler may send 200 requests/s (defaults:
  # 20 and 50): the ReplicaSet controller's pod creations set the pace of the scale harness's
  # R2, which asks for 100 replacements/s and got 20.
  spawn kube-controller-manager "$node_bin/kube-controller-manager" \
    --kubeconfig="$state/controller-manager.kubeconfig" --use-service-account-credentials=true \
    --service-account-private-key-file="$certs/sa.key" --root-ca-file="$certs/ca.crt" \
    --cluster-signing-cert-file="$certs/ca.crt" --cluster-signing-key-file="$certs/ca.key" \
    --leader-elect=false --node-monitor-grace-period=25m \
    --kube-api-qps=200 --kube-api-burst=400 \
    --bind-address=127.0.0.1 --secure-port="$(free_port)" --profiling=false
  spawn kube-scheduler "$node_bin/kube-scheduler" --kubeconfig="$state/scheduler.kubeconfig" \
    --kube-api-qps=200 --kube-api-burst=400 \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$(free_port)" --profiling=false
  # KWOK: the Windows nodes (label type=kwok) stay Ready and their pods run.
  kwok_stages >"$state/kwok-stages.yaml"
  spawn kwok "$node_bin/kwok" --kubeconfig="$state/kwok.kubeconfig" --config="$state/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-label-selector=type=kwok \
    --cidr="$KWOK_POD_CIDR" --node-ip=127.0.0.1 --server-address="127.0.0.1:$(free_port)"
  # The default ServiceAccount appears once the controller-manager runs.
  wait_for kube-controller-manager 60 kubectl_admin get serviceaccount default
}

# KWOK's own stages, and one more that does what a kubelet does with a Node's extended resources:
# the scheduler reads status.allocatable, and a kubelet copies there what a controller (winipam,
# the VPC Resource Controller) advertises in status.capacity. KWOK does not, so without this
# stage no pod that asks for the IP resource would ever be scheduled on a KWOK node.
kwok_stages() {
  cat "$node_bin/kwok-stages.yaml"
  cat <<'EOF'
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-allocatable-follows-capacity
spec:
  # Chosen over the heartbeat stage, which also matches a Ready node (KWOK picks one matching
  # stage, by weight).
  weight: 1
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.capacity == .status.allocatable'
      operator: 'In'
      values:
      - 'false'
  next:
    statusTemplate: |
      allocatable:
      {{ YAML .status.capacity 1 }}
EOF
}

# moto as the EC2 of the cluster, on the bridge address so winipam's pods reach it.
start_moto() {
  eval "$("$scripts/moto.sh" env)"
  spawn moto "$WINIPAM_MOTO_SERVER_BIN" -H "$BRIDGE_IP" -p "$MOTO_PORT"
  wait_for moto 60 curl -fsS -o /dev/null "http://$BRIDGE_IP:$MOTO_PORT/moto-api/"
}

print_exports() {
  printf 'export KUBECONFIG=%q\n' "$state/admin.kubeconfig"
  printf 'export PATH=%q:"$PATH"\n' "$(dirname "$WINIPAM_KUBECTL_BIN")"
  printf 'export WINIPAM_CLUSTER_DIR=%q\n' "$state"
  printf 'export WINIPAM_CLUSTER_NODE=%q\n' "$NODE_NAME"
  printf 'export WINIPAM_CLUSTER_EC2_ENDPOINT=%q\n' "http://$BRIDGE_IP:$MOTO_PORT"
  printf 'export WINIPAM_CLUSTER_CONTAINERD_SOCKET=%q\n' "$state/containerd/containerd.sock"
  printf 'export WINIPAM_HELM_BIN=%q\n' "$WINIPAM_HELM_BIN"
  printf 'export WINIPAM_CLUSTER_CONTROLLER_KUBECONFIG=%q\n' "$state/controller.kubeconfig"
  if [ "${WINIPAM_CLUSTER_AUDIT:-}" = 1 ]; then
    printf 'export WINIPAM_CLUSTER_AUDIT_LOG=%q\n' "$state/audit.log"
  fi
}

start() {
  [ "$(id -u)" = 0 ] || die "the cluster needs root (kubelet, containerd, the bridge)"
  build
  eval "$("$scripts/controlplane.sh" env)"
  eval "$("$scripts/helm.sh" env)"
  if [ -e "$state" ]; then
    log "$state exists (a cluster left behind?): tearing it down first"
    teardown
  fi
  mkdir -p "$state"
  local start=$SECONDS
  save_sysctls
  cluster_certs
  setup_bridge
  start_containerd
  import_image "$node_bin/pause.tar"
  start_control_plane
  start_kubelet
  start_moto
  log "up in $((SECONDS - start)) s (node $NODE_NAME Ready)"
  print_exports >"$state/env"
}

teardown() {
  [ -d "$state" ] || return 0
  # Undo as much as possible: one step failing must not leave the rest behind.
  set +e
  eval "$("$scripts/controlplane.sh" env)"
  local name
  for name in kwok kube-scheduler kube-controller-manager moto; do stop_process "$name"; done
  stop_pods
  stop_process kubelet
  for name in kube-apiserver etcd; do stop_process "$name"; done
  stop_containerd
  # Whatever still runs with the state dir on its command line (a run whose pid files another
  # run removed) goes too: this is the one cluster of the host.
  pkill -KILL -f -- "$state/" 2>/dev/null
  clean_host
  restore_sysctls
  # The logs of the last cluster (its processes' and its pods') outlive it, for a failed test.
  rm -rf "$state.last-logs"
  mkdir -p "$state.last-logs"
  cp "$state"/*.log "$state.last-logs/" 2>/dev/null
  cp -r "$state/pod-logs" "$state.last-logs/pods" 2>/dev/null
  rm -rf "$state"
}

run() {
  local lifeline=false
  [ "${1:-}" = --lifeline ] && lifeline=true
  trap 'teardown' EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP
  start
  cat "$state/env"
  echo ready
  echo $$ >"$state/runner.pid"
  # Whoever reads stdout may go away: later output must not end this script with SIGPIPE.
  exec >>"$state/runner.log" 2>&1
  if $lifeline; then
    cat >/dev/null || true
  else
    # A signal ends this wait (and the traps tear down).
    while :; do sleep 3600 & wait $! || true; done
  fi
}

up() {
  if [ -f "$state/runner.pid" ] && kill -0 "$(cat "$state/runner.pid")" 2>/dev/null; then
    log "already up"
    cat "$state/env"
    return
  fi
  local out
  out=$(mktemp)
  setsid "$0" run </dev/null >"$out" 2>&1 &
  local pid=$! i
  for i in $(seq 6000); do
    if grep -qx ready "$out"; then
      grep '^export ' "$out"
      rm -f "$out"
      log "up; stop with: $0 down"
      return
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$out" >&2; rm -f "$out"; die "the cluster did not start"; }
    sleep 0.1
  done
  cat "$out" >&2
  die "the cluster did not start in 10 minutes"
}

down() {
  if [ -f "$state/runner.pid" ]; then
    local pid i
    pid=$(cat "$state/runner.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  # Whatever a killed runner left.
  teardown
  log "down"
}

main() {
  case "${1:-}" in
    build) build ;;
    up)
      up >"$state.exports.tmp" || { rm -f "$state.exports.tmp"; exit 1; }
      if [ "${2:-}" = --with-winipam ]; then
        (eval "$(cat "$state.exports.tmp")" && "$scripts/cluster-winipam.sh" install) ||
          { rm -f "$state.exports.tmp"; die "installing winipam failed (the cluster stays up; $0 down stops it)"; }
      fi
      cat "$state.exports.tmp"
      rm -f "$state.exports.tmp"
      ;;
    down) down ;;
    env) [ -f "$state/env" ] || die "not up: run $0 up"; cat "$state/env" ;;
    run) shift; run "$@" ;;
    *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"
