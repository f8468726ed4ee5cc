#!/usr/bin/env bash
# The real Kubernetes control plane the tests and the dev cluster run against: etcd and
# kube-apiserver (plus a kubectl of the same version), built from Go modules and cached.
#
#   controlplane.sh build       build the binaries if they are not cached yet
#   controlplane.sh env         build if needed, then print `export WINIPAM_*_BIN=...` lines
#   controlplane.sh versions    print the pinned versions
#   controlplane.sh run DIR [--lifeline]
#       start etcd + kube-apiserver on free 127.0.0.1 ports with fresh certificates under DIR
#       (which must be empty or absent), print `ready` on stdout once /readyz answers, then keep
#       running until SIGTERM/SIGINT or, with --lifeline, until stdin reaches EOF (the process
#       holding the other end exited). Both processes are then killed and DIR is removed.
#       DIR/kubeconfig holds the admin credential (O=system:masters); DIR/pids the pids.
#   controlplane.sh free-port   print a port nobody listens on (127.0.0.1)
#
# Progress goes to stderr; stdout carries only what callers parse.
set -euo pipefail

# v1.37.2 is the newest 1.37 but the Go module proxy refuses its zip (403 "not available").
KUBERNETES_VERSION=v1.37.1
ETCD_VERSION=v3.6.16

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/winipam"
cp_root="$cache_root/controlplane"
bin_dir="$cp_root/kubernetes-$KUBERNETES_VERSION-etcd-$ETCD_VERSION"

log() { printf 'controlplane: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- build -----------------------------------------------------------------------------------

find_go() {
  if [ -n "${GO:-}" ]; then echo "$GO"; return; fi
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return; fi
  die "Go is needed to build the control plane (set GO=/path/to/go)"
}

# Go state lives under the winipam cache so CI can keep it, without touching the user's own
# GOPATH/GOCACHE. GOTOOLCHAIN=local: never download another toolchain behind the user's back.
go_env() {
  export GOPATH="$cache_root/go"
  export GOMODCACHE="$cache_root/go/mod"
  export GOCACHE="$cache_root/go/build"
  export GOTOOLCHAIN=local
  # -modcacherw: Go makes its module cache read-only, which stops `rm -rf` of the cache.
  export GOFLAGS="-mod=mod -modcacherw -buildvcs=false"
  export CGO_ENABLED=0
}

# The name `go build` gives the binary of a main package: its last path element, except for a
# major-version suffix (go.etcd.io/etcd/server/v3 -> server).
binary_name() {
  local name
  name=$(basename "$1")
  case "$name" in v[0-9]*) name=$(basename "$(dirname "$1")") ;; esac
  echo "$name"
}

# Runs `go build` in the scratch module $1 with extra linker flags $2, output binaries into
# $3, for packages $4... `-v` prints one line per compiled package: count them as progress.
go_build() {
  local module=$1 ldflags="-s -w $2" out=$3 logfile=$1/build.log
  shift 3
  local start=$SECONDS
  if ! (cd "$module" && "$go" build -v -trimpath -ldflags="$ldflags" -o "$out/" "$@") 2>&1 |
    awk -v logf="$logfile" '{ print > logf; n++; if (n % 250 == 0) { printf "controlplane:   %d packages compiled\n", n > "/dev/stderr" } }'
  then
    tail -n 40 "$logfile" >&2
    die "go build failed in $module (full log: $logfile)"
  fi
  for pkg in "$@"; do
    [ -x "$out/$(binary_name "$pkg")" ] || { tail -n 40 "$logfile" >&2; die "go build did not produce $(basename "$pkg") (log: $logfile)"; }
  done
  log "  built $* in $((SECONDS - start)) s"
}

build_etcd() {
  local module="$cp_root/src/etcd-$ETCD_VERSION" out=$1
  mkdir -p "$module"
  # etcd's server module replaces its sibling modules with relative paths, so it cannot be
  # `go install`ed; a scratch module requiring it resolves the siblings to their published twins.
  cat >"$module/go.mod" <<EOF
module winipam.local/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  log "building etcd $ETCD_VERSION"
  go_build "$module" "" "$out/etcd-build" go.etcd.io/etcd/server/v3
  mv "$out/etcd-build/server" "$out/etcd"
  rmdir "$out/etcd-build"
}

# Writes the scratch module that builds commands of k8s.io/kubernetes at $KUBERNETES_VERSION and
# prints its directory. scripts/cluster.sh builds the node's commands from the same module, so
# they share the compiled packages of the Go build cache.
kubernetes_module() {
  local module="$cp_root/src/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$module"
  # k8s.io/kubernetes replaces every k8s.io staging module with a directory of its own repo.
  # Each staging module is published as v0.N.M for kubernetes v1.N.M: replace with those.
  local info gomod staging_version="v0.${KUBERNETES_VERSION#v1.}"
  info=$("$go" mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" 2>&1) ||
    die "go mod download k8s.io/kubernetes@$KUBERNETES_VERSION failed: $info"
  gomod=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || die "no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION in: $info"
  {
    printf 'module winipam.local/kubernetes\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBERNETES_VERSION"
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*$#\t\1 => \1 '"$staging_version"'#p' "$gomod"
    printf ')\n'
  } >"$module/go.mod"
  echo "$module"
}

# Linker flags that stamp the version in, as Kubernetes' own build does; without them /version
# and `kubectl version` say v0.0.0-master.
kubernetes_stamp() {
  local minor=${KUBERNETES_VERSION#v1.} stamp="" pkg
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp="$stamp -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    stamp="$stamp -X $pkg.gitTreeState=clean"
  done
  echo "$stamp"
}

build_kubernetes() {
  local module out=$1
  module=$(kubernetes_module)
  log "building kube-apiserver and kubectl $KUBERNETES_VERSION (cold: about 7 min on 2 cores)"
  go_build "$module" "$(kubernetes_stamp)" "$out" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
}

# Sets $go and the Go environment, and checks that Go is 1.26 or newer: the pinned modules
# (Kubernetes 1.37, etcd 3.6.16, the VPC Resource Controller) declare `go 1.26.x`, and with
# GOTOOLCHAIN=local an older Go would only fail deep in the build. $1 names what is built.
setup_go() {
  go=$(find_go)
  go_env
  local go_version
  go_version=$("$go" env GOVERSION)
  case "$go_version" in
    go1.2[6-9]* | go1.[3-9][0-9]*) ;;
    *) die "$go is $go_version; building $1 needs Go 1.26 or newer (set GO=...)" ;;
  esac
}

build() {
  if [ -f "$bin_dir/.complete" ]; then return; fi
  setup_go "Kubernetes $KUBERNETES_VERSION"
  mkdir -p "$cp_root"
  # Two callers at once (test script and dev cluster) must not build into the same place.
  exec 9>"$cp_root/.build.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if [ -f "$bin_dir/.complete" ]; then return; fi
  log "building the control plane with $("$go" version) into $bin_dir"
  local start=$SECONDS tmp="$bin_dir.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  build_etcd "$tmp"
  build_kubernetes "$tmp"
  "$tmp/etcd" --version >/dev/null
  "$tmp/kube-apiserver" --version >/dev/null
  touch "$tmp/.complete"
  rm -rf "$bin_dir"
  mv "$tmp" "$bin_dir"
  log "control plane built in $((SECONDS - start)) s"
}

print_env() {
  printf 'export WINIPAM_ETCD_BIN=%q\n' "$bin_dir/etcd"
  printf 'export WINIPAM_KUBE_APISERVER_BIN=%q\n' "$bin_dir/kube-apiserver"
  printf 'export WINIPAM_KUBECTL_BIN=%q\n' "$bin_dir/kubectl"
}

# --- run -------------------------------------------------------------------------------------

# A random port below Linux's ephemeral range (32768+) that nothing listens on. Two control
# planes starting at once may still pick the same one: `run` retries on "address already in use".
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12000))
    case " $taken_ports " in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      taken_ports="$taken_ports $port"
      echo "$port"
      return
    fi
  done
}

b64() { base64 <"$1" | tr -d '\n'; }

# EC P-256 keys: generated in milliseconds, accepted by Go and by rustls.
gen_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# Signs a certificate for key $2 with subject $3 and extensions $4 (lines), written to $1.
sign_cert() {
  openssl req -new -key "$2" -subj "$3" 2>/dev/null |
    openssl x509 -req -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
      -days 3650 -extfile <(printf '%s\n' "$4") -out "$1" 2>/dev/null
}

gen_certs() {
  certs="$dir/certs"
  mkdir -p "$certs"
  gen_key "$certs/ca.key"
  openssl req -x509 -new -key "$certs/ca.key" -subj "/CN=winipam-test-ca" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$certs/ca.crt" 2>/dev/null
  local leaf='keyUsage=critical,digitalSignature
basicConstraints=critical,CA:FALSE'
  gen_key "$certs/serving.key"
  sign_cert "$certs/serving.crt" "$certs/serving.key" "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth
$leaf"
  # The admin credential: a client certificate in system:masters, which RBAC lets do anything.
  gen_key "$certs/admin.key"
  sign_cert "$certs/admin.crt" "$certs/admin.key" "/O=system:masters/CN=winipam-admin" \
    "extendedKeyUsage=clientAuth
$leaf"
  # The service-account token signing key pair (TokenRequest).
  gen_key "$certs/sa.key"
  openssl pkey -in "$certs/sa.key" -pubout -out "$certs/sa.pub"
}

write_kubeconfig() {
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: winipam
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(b64 "$certs/ca.crt")
users:
- name: winipam-admin
  user:
    client-certificate-data: $(b64 "$certs/admin.crt")
    client-key-data: $(b64 "$certs/admin.key")
contexts:
- name: winipam
  context:
    cluster: winipam
    user: winipam-admin
    namespace: default
current-context: winipam
EOF
}

start_etcd() {
  rm -rf "$dir/etcd"
  # No fsync: the data goes away with DIR, and fsync dominates etcd's write latency.
  "$WINIPAM_ETCD_BIN" --name=winipam --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="winipam=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level=warn \
    </dev/null >"$dir/etcd.log" 2>&1 &
  etcd_pid=$!
}

# With WINIPAM_APISERVER_AUDIT=1, every write (create, update, patch, delete) is logged to
# DIR/audit.log with its user: the benchmark counts each controller's API writes there.
audit_args() {
  [ "${WINIPAM_APISERVER_AUDIT:-}" = 1 ] || return 0
  cat >"$dir/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
POLICY
  printf '%s\n' "--audit-policy-file=$dir/audit-policy.yaml" "--audit-log-path=$dir/audit.log" \
    "--audit-log-mode=blocking" "--audit-log-maxsize=0"
}

start_apiserver() {
  local audit
  mapfile -t audit < <(audit_args)
  # ServiceAccount admission is off because no controller-manager creates the `default`
  # service account that pods would need. The endpoint reconciler (the `kubernetes` service's
  # endpoints) refuses a loopback address. Authorization is Node,RBAC as in a real cluster.
  "$WINIPAM_KUBE_APISERVER_BIN" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --secure-port="$api_port" --etcd-servers="http://127.0.0.1:$etcd_port" \
    --cert-dir="$dir/apiserver" --tls-cert-file="$certs/serving.crt" --tls-private-key-file="$certs/serving.key" \
    --client-ca-file="$certs/ca.crt" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$certs/sa.pub" --service-account-signing-key-file="$certs/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none --enable-priority-and-fairness=false --profiling=false ${audit[@]+"${audit[@]}"} \
    </dev/null >"$dir/kube-apiserver.log" 2>&1 &
  apiserver_pid=$!
}

stop_processes() {
  local pid
  # SIGKILL: nothing they hold is worth a graceful shutdown, and it is immediate.
  for pid in ${apiserver_pid:-} ${etcd_pid:-} ${lifeline_pid:-}; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  apiserver_pid= etcd_pid= lifeline_pid=
}

cleanup() {
  stop_processes
  # Everything in DIR is ours and disposable, down to the certificates.
  if [ -n "${dir:-}" ]; then rm -rf "$dir"; fi
}

ready() {
  "$WINIPAM_KUBECTL_BIN" --kubeconfig="$dir/kubeconfig" --request-timeout=2s get --raw=/readyz >/dev/null 2>&1
}

show_logs() {
  local f
  for f in "$dir/etcd.log" "$dir/kube-apiserver.log"; do
    if [ -f "$f" ]; then
      echo "--- last lines of $(basename "$f"):"
      tail -n 30 "$f"
    fi
  done >&2
}

# Starts etcd + kube-apiserver and waits for /readyz. Returns 1 on a port clash (the caller
# retries with other ports); exits on any other failure.
start_once() {
  taken_ports=
  etcd_port=$(free_port)
  peer_port=$(free_port)
  api_port=$(free_port)
  write_kubeconfig
  start_etcd
  start_apiserver
  local deadline=$((SECONDS + 90))
  while ! ready; do
    if ! kill -0 "$etcd_pid" 2>/dev/null || ! kill -0 "$apiserver_pid" 2>/dev/null; then
      stop_processes
      if grep -qs 'address already in use' "$dir/etcd.log" "$dir/kube-apiserver.log"; then
        return 1
      fi
      show_logs
      die "etcd or kube-apiserver exited during startup"
    fi
    if [ $SECONDS -ge $deadline ]; then
      show_logs
      die "kube-apiserver not ready after 90 s"
    fi
    sleep 0.1
  done
}

run() {
  dir=$1
  local lifeline=false bin attempt
  [ "${2:-}" = --lifeline ] && lifeline=true
  for bin in "$WINIPAM_ETCD_BIN" "$WINIPAM_KUBE_APISERVER_BIN" "$WINIPAM_KUBECTL_BIN"; do
    [ -x "$bin" ] || die "$bin is missing: run scripts/controlplane.sh build"
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -z "$(ls -A "$dir")" ] || { dir=; die "$1 is not empty"; }
  trap cleanup EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP
  gen_certs
  for attempt in 1 2 3 4 5; do
    if start_once; then break; fi
    [ "$attempt" = 5 ] && die "no free ports after 5 attempts"
    log "port clash, retrying with other ports"
  done
  printf 'etcd %s\nkube-apiserver %s\nrunner %s\n' "$etcd_pid" "$apiserver_pid" "$$" >"$dir/pids"
  echo ready
  # Whoever reads stdout may go away: later output must not end this script with SIGPIPE.
  exec >>"$dir/run.log" 2>&1
  if $lifeline; then
    # A background job reads /dev/null unless told otherwise: hand it the real stdin.
    cat <&0 >/dev/null &
    lifeline_pid=$!
  fi
  # Returns when stdin closes, when etcd or kube-apiserver dies, or (via the traps) on a signal.
  wait -n $etcd_pid $apiserver_pid ${lifeline_pid:-} || true
  log "stopping"
}

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

main() {
  case "${1:-}" in
    build) build ;;
    env) build; print_env ;;
    free-port) taken_ports= && free_port ;;
    versions) printf 'kubernetes %s\netcd %s\n' "$KUBERNETES_VERSION" "$ETCD_VERSION" ;;
    run)
      shift
      [ $# -ge 1 ] || usage
      # The binaries come from the environment when set (the test harness passes what `env`
      # printed), else from the cache.
      export WINIPAM_ETCD_BIN="${WINIPAM_ETCD_BIN:-$bin_dir/etcd}"
      export WINIPAM_KUBE_APISERVER_BIN="${WINIPAM_KUBE_APISERVER_BIN:-$bin_dir/kube-apiserver}"
      export WINIPAM_KUBECTL_BIN="${WINIPAM_KUBECTL_BIN:-$bin_dir/kubectl}"
      run "$@"
      ;;
    *) usage ;;
  esac
}

# Sourced (by dev-cluster.sh) it only defines its functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
