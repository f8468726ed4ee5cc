#!/usr/bin/env bash
# The real node of scripts/cluster.sh: containerd, the CNI bridge and the kubelet, and the undoing
# of everything they change on the host. Sourced by cluster.sh (it uses its variables: $state,
# $node_bin, $certs, $BRIDGE...); not meant to run alone.
#
# What a kubelet and containerd leave on a host, and how each is undone here (teardown order
# matters: pods go while the kubelet and containerd still run, so the CNI teardown happens):
# - sysctls the kubelet sets for its lifetime: saved before, restored after;
# - iptables chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...): the tables are saved before and
#   restored after;
# - /kubepods cgroups in every v1 hierarchy: removed, deepest first;
# - mounts under the state dir (the kubelet's bind mount of its root dir, volumes, container
#   rootfs, sandbox shm), the network namespaces of pods, the bridge and the CNI cache entries;
# - fixed paths the kubelet creates (/var/lib/kubelet, /var/log/containers): removed when they
#   did not exist before.

SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward"
FIXED_PATHS="/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /etc/cni"

save_sysctls() {
  local key path
  : >"$state/host.sysctl"
  for key in $SYSCTLS; do
    sysctl -n "$key" >/dev/null 2>&1 && printf '%s=%s\n' "$key" "$(sysctl -n "$key")" >>"$state/host.sysctl"
  done
  for path in $FIXED_PATHS; do
    [ -e "$path" ] || echo "$path" >>"$state/host.created-paths"
  done
  local tool
  for tool in iptables ip6tables; do
    command -v "$tool-save" >/dev/null 2>&1 && "$tool-save" >"$state/host.$tool" 2>/dev/null || true
  done
}

restore_sysctls() {
  local line
  if [ -f "$state/host.sysctl" ]; then
    while IFS= read -r line; do sysctl -q -w "$line" >/dev/null 2>&1 || log "could not restore $line"; done <"$state/host.sysctl"
  fi
}

setup_bridge() {
  ip link add "$BRIDGE" type bridge
  # A fixed MAC. A bridge without one takes the lowest MAC of its ports, so it changes whenever
  # the pod whose host-side veth had that MAC goes (a rolling upgrade's old replicas). Every
  # pod's ARP entry for the gateway then names a MAC nobody answers for, and traffic between
  # pods and the apiserver stops until the entry goes stale (about 30 s). Seen in the chart
  # test as a leader kill with no new leader for 45 s (the followers' Lease requests failed to
  # connect) and as pods admitted without the IP resource (the webhook call timed out and
  # failurePolicy Ignore let the pod through).
  ip link set "$BRIDGE" address "$BRIDGE_MAC"
  ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
  # The `kubernetes` Service's ClusterIP: the apiserver binds it, pods reach it through the bridge.
  ip addr add "$API_IP/32" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  mkdir -p "$state/cni/net.d" "$state/cni/ipam"
  # isGateway false: the bridge plugin would turn on net.ipv4.ip_forward; nothing here needs
  # traffic to leave the host, so the bridge gets its address above and pods a default route.
  cat >"$state/cni/net.d/10-winipam.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "winipam",
  "plugins": [{
    "type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "${BRIDGE_IP%.*}.10"}]],
      "routes": [{"dst": "0.0.0.0/0", "gw": "$BRIDGE_IP"}],
      "dataDir": "$state/cni/ipam"
    }
  }]
}
EOF
}

ctr_k8s() { ctr --address "$state/containerd/containerd.sock" --namespace k8s.io "$@"; }

start_containerd() {
  local dir="$state/containerd"
  mkdir -p "$dir"
  # restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE and cannot lower oom_score_adj;
  # without it every sandbox fails ("can't get final child's PID from pipe"). No registry is
  # reachable: the sandbox image is the pause image imported below.
  cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/winipam-pause:1"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
EOF
  spawn containerd containerd --config "$dir/config.toml"
  wait_for containerd 30 ctr --address "$dir/containerd.sock" version
}

# Imports an image archive (docker-archive) into the namespace the kubelet sees.
import_image() {
  ctr_k8s images import "$1" >/dev/null
}

start_kubelet() {
  local dir="$state/kubelet"
  mkdir -p "$dir" "$state/kubelet-pki" "$state/pod-logs"
  cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $BRIDGE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $certs/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$state/containerd/containerd.sock
# cgroup v1 is refused by default since 1.35; this host has v1 (hybrid).
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
# Imported images cannot be pulled again: never collect them, and evict only when truly full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
podLogsDir: $state/pod-logs
serializeImagePulls: false
maxPods: 110
EOF
  spawn kubelet "$node_bin/kubelet" --config="$state/kubelet.yaml" --kubeconfig="$state/kubelet.kubeconfig" \
    --root-dir="$dir" --cert-dir="$state/kubelet-pki" --hostname-override="$NODE_NAME" --node-ip="$BRIDGE_IP"
  wait_for kubelet 90 node_ready "$NODE_NAME"
}

node_ready() {
  [ "$(kubectl_admin get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# SIGTERM, then SIGKILL after 10 s.
stop_process() {
  local name=$1 pid i
  [ -f "$state/$name.pid" ] || return 0
  pid=$(cat "$state/$name.pid")
  if kill -TERM "$pid" 2>/dev/null; then
    for i in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$state/$name.pid"
}

# The real node's pods go while the kubelet runs: it stops their containers and sandboxes, which
# tears down their network. A grace period of 0 would skip that teardown.
stop_pods() {
  alive kubelet && alive kube-apiserver && alive containerd || return 0
  kubectl_admin delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
    --grace-period=1 --wait=false >/dev/null 2>&1 || true
  local i
  for i in $(seq 600); do
    [ -z "$(ctr_k8s tasks ls -q 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  log "containers still running after 60 s: $(ctr_k8s tasks ls -q 2>/dev/null | tr '\n' ' ')"
}

stop_containerd() {
  local sock="$state/containerd/containerd.sock" pid
  if alive containerd; then
    # Whatever still runs (a kubelet that died first) is killed through containerd.
    for pid in $(ctr_k8s tasks ls -q 2>/dev/null); do
      ctr_k8s tasks kill -s SIGKILL "$pid" >/dev/null 2>&1 || true
    done
  fi
  stop_process containerd
  # Shims outlive containerd; they are started with its address.
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null || true
  local i
  for i in $(seq 50); do
    pgrep -f "containerd-shim-runc-v2 .*-address $sock" >/dev/null 2>&1 || break
    sleep 0.1
  done
}

clean_host() {
  local mnt ns tool table dir path
  # Mounts under the state dir, deepest first.
  for mnt in $(awk -v s="$state" '$2 == s || index($2, s "/") == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$mnt" 2>/dev/null || true
  done
  # Pods' network namespaces (containerd names them cni-UUID).
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ { print $1 }'); do
    ip netns delete "$ns" 2>/dev/null || true
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" || true
  rm -f /var/lib/cni/results/winipam-* 2>/dev/null || true
  # The kubelet's cgroups, deepest first.
  for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
    [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  for tool in iptables ip6tables; do
    [ -f "$state/host.$tool" ] || continue
    {
      cat "$state/host.$tool"
      # A table the kubelet loaded after the save is emptied too.
      for table in filter nat mangle; do
        grep -q "^\*$table$" "$state/host.$tool" || printf '*%s\nCOMMIT\n' "$table"
      done
    } | "$tool-restore" 2>/dev/null || log "could not restore $tool"
  done
  if [ -f "$state/host.created-paths" ]; then
    while IFS= read -r path; do rm -rf "$path"; done <"$state/host.created-paths"
  fi
}
