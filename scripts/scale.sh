#!/usr/bin/env bash
# The real-apiserver scale harness: the cluster of scripts/cluster.sh (with the apiserver's audit
# log of the controller's writes), winipam run on the host with EC2 simulated in the process
# (`--simulated-ec2`: the simulator's EC2 latencies and account throttling), KWOK Windows nodes of
# S1/S2's type (m5.xlarge, prefix mode), and `winipam scale-probe` driving a Deployment through
# the real scheduler and measuring from outside. Root only (the cluster's real node).
#
#   scale.sh r1|r2|r3 [--nodes N] [--pods P] [--rate R] [--duration D] [--ec2 sim|moto]
#            [--config KEY=VALUE]... [--release] [--out DIR]
#
#   r1  scale-out from 0 to P pods at R pods/s
#   r2  r1, then pods replaced at up to R/s for D (default 30s), the Deployment kept at P less R live
#   r3  r1 with two controllers, then the leader SIGKILLed and P/10 more pods
#   --ec2 sim (r1, r2 default): EC2 simulated in the controller process; moto (r3 default): the
#       cluster's moto, which both replicas share (a simulated EC2 dies with its process), in
#       secondary-IP mode (moto ignores /28 prefixes: 14 pods per node, e.g. --nodes 30 --pods 300;
#       at most 1,024 nodes, a /26 each)
#   --config  a key of the winipam ConfigMap (SPEC 3.1), e.g. windows-warm-ip-target=16 to keep
#       warm addresses ahead of a churn (repeatable)
#   --release  measure the release build (what the image ships; about 8 minutes to build cold on
#       2 cores); the default is the tests' debug build, whose CPU and latency figures are several
#       times a release build's. The report's title names the build that ran.
#
# Writes DIR/<scenario>.json, DIR/<scenario>.md and DIR/<scenario>.svg (default DIR: target/scale), and the
# controllers' logs there. The cluster is torn down when the run ends, however it ends.
# The winipam binary: $WINIPAM_BIN, else a debug or (--release) release build (cargo build,
# honouring CARGO_TARGET_DIR). The controllers log at $WINIPAM_LOG_LEVEL (default warn; info
# shows a rebuild's steps: the Lease taken, the statuses read, each node built).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf 'scale: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -ge 1 ] || { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
scenario=$1
shift
case "$scenario" in r1 | r2 | r3) ;; *) die "unknown scenario $scenario (r1, r2, r3)" ;; esac
nodes=20 pods=300 rate=50 duration=30s out="$root/target/scale" ec2=sim profile=debug config=()
[ "$scenario" = r3 ] && ec2=moto
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2 ;;
    --pods) pods=$2 ;;
    --rate) rate=$2 ;;
    --duration) duration=$2 ;;
    --out) out=$2 ;;
    --ec2) ec2=$2 ;;
    --config)
      [[ "${2:-}" == ?*=* ]] || die "--config KEY=VALUE, not '${2:-}'"
      config+=(--from-literal="$2")
      ;;
    --release) profile=release; shift; continue ;;
    *) die "unknown flag $1" ;;
  esac
  shift 2
done
case "$ec2" in sim | moto) ;; *) die "--ec2 sim or moto, not $ec2" ;; esac
mkdir -p "$out"

if [ -z "${WINIPAM_BIN:-}" ]; then
  build=(--locked --bin winipam)
  [ "$profile" = release ] && build+=(--release)
  (cd "$root" && cargo build "${build[@]}" >&2)
  WINIPAM_BIN="${CARGO_TARGET_DIR:-$root/target}/$profile/winipam"
fi

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$root/scripts/cluster.sh" down >&2 || true
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

eval "$(WINIPAM_CLUSTER_AUDIT=1 "$root/scripts/cluster.sh" up)"
kubectl apply -f "$root/crds" >/dev/null
kubectl create namespace winipam-system >/dev/null
# Prefix mode as S1/S2, except with moto, which ignores /28 prefixes: secondary IPs there
# (14 pods per m5.xlarge).
prefix=true
[ "$ec2" = moto ] && prefix=false
kubectl -n winipam-system create configmap winipam \
  --from-literal=enable-windows-prefix-delegation=$prefix "${config[@]}" >/dev/null

# A port nobody listens on, for each controller's /metrics.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

ec2_flags=(--simulated-ec2) probe_flags=()
if [ "$ec2" = moto ]; then
  ec2_flags=(--ec2-endpoint "$WINIPAM_CLUSTER_EC2_ENDPOINT" --region us-east-1)
  probe_flags=(--moto "$WINIPAM_CLUSTER_EC2_ENDPOINT")
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
fi
replicas=1
[ "$scenario" = r3 ] && replicas=2
controllers=()
for i in $(seq "$replicas"); do
  port=$(free_port)
  # Lease timings as the chart's defaults: R3's figure includes the 15 s lease expiry.
  KUBECONFIG=$WINIPAM_CLUSTER_CONTROLLER_KUBECONFIG "$WINIPAM_BIN" run "${ec2_flags[@]}" \
    --disable-webhooks --namespace winipam-system --pod-name "scale-$i" \
    --metrics-addr "127.0.0.1:$port" --log-format json --log-level "${WINIPAM_LOG_LEVEL:-warn}" \
    >"$out/$scenario-controller-$i.log" 2>&1 &
  pids+=($!)
  controllers+=(--controller "scale-$i=$!@127.0.0.1:$port")
  # The first one leads: R3 kills a leader that built the pools from the start.
  [ "$i" = 1 ] && sleep 3
done

log "$scenario ($ec2 EC2): $nodes nodes, $pods pods at $rate/s; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$WINIPAM_BIN" scale-probe "$scenario" --nodes "$nodes" --pods "$pods" --rate "$rate" \
  --duration "$duration" "${controllers[@]}" "${probe_flags[@]}" \
  --apiserver-pid "$(cat "$WINIPAM_CLUSTER_DIR/kube-apiserver.pid")" \
  --etcd-pid "$(cat "$WINIPAM_CLUSTER_DIR/etcd.pid")" \
  --audit-log "$WINIPAM_CLUSTER_AUDIT_LOG" --out "$out"
