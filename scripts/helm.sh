#!/usr/bin/env bash
# helm, for rendering and testing the chart in deploy/helm/winipam: built from its Go module at a
# pinned version and cached next to the control plane (same Go state under the winipam cache).
#
#   helm.sh build       build helm if it is not cached yet
#   helm.sh env         build if needed, then print `export WINIPAM_HELM_BIN=...`
#   helm.sh version     print the pinned version
#
# Progress goes to stderr; stdout carries only what callers parse.
set -euo pipefail

HELM_VERSION=v3.22.0
# `helm template` renders for this Kubernetes version unless told otherwise (--kube-version);
# helm's own release build stamps the minor of the client-go it is built with (v0.37 here).
HELM_KUBE_MAJOR=1
HELM_KUBE_MINOR=37

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/winipam"
helm_root="$cache_root/helm"
bin_dir="$helm_root/helm-$HELM_VERSION"

log() { printf 'helm.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_go() {
  if [ -n "${GO:-}" ]; then echo "$GO"; return; fi
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return; fi
  die "Go is needed to build helm (set GO=/path/to/go)"
}

# The same Go state as scripts/controlplane.sh: the Kubernetes modules both need are downloaded
# and compiled once. GOTOOLCHAIN=local: never download another toolchain behind the user's back.
go_env() {
  export GOPATH="$cache_root/go"
  export GOMODCACHE="$cache_root/go/mod"
  export GOCACHE="$cache_root/go/build"
  export GOTOOLCHAIN=local
  # `go install module@version` builds with helm's own go.mod and go.sum, exactly as released.
  # -modcacherw: Go makes its module cache read-only, which stops `rm -rf` of the cache.
  export GOFLAGS="-modcacherw -buildvcs=false"
  export CGO_ENABLED=0
}

build() {
  if [ -f "$bin_dir/.complete" ]; then return; fi
  local go go_version
  go=$(find_go)
  go_env
  go_version=$("$go" env GOVERSION)
  # helm v3.22 declares `go 1.26.0`; with GOTOOLCHAIN=local an older Go would only fail late.
  case "$go_version" in
    go1.2[6-9]* | go1.[3-9][0-9]*) ;;
    *) die "$go is $go_version; building helm $HELM_VERSION needs Go 1.26 or newer (set GO=...)" ;;
  esac
  mkdir -p "$helm_root"
  # Two callers at once must not build into the same place.
  exec 9>"$helm_root/.build.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if [ -f "$bin_dir/.complete" ]; then return; fi
  log "building helm $HELM_VERSION with $("$go" version) into $bin_dir (cold: a few minutes)"
  local start=$SECONDS tmp="$bin_dir.tmp" logfile="$helm_root/build.log" pkg=helm.sh/helm/v3
  local ldflags="-s -w -X $pkg/internal/version.version=$HELM_VERSION -X $pkg/internal/version.metadata="
  ldflags="$ldflags -X $pkg/internal/version.gitTreeState=clean"
  ldflags="$ldflags -X $pkg/pkg/chartutil.k8sVersionMajor=$HELM_KUBE_MAJOR -X $pkg/pkg/chartutil.k8sVersionMinor=$HELM_KUBE_MINOR"
  ldflags="$ldflags -X $pkg/pkg/lint/rules.k8sVersionMajor=$HELM_KUBE_MAJOR -X $pkg/pkg/lint/rules.k8sVersionMinor=$HELM_KUBE_MINOR"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! GOBIN="$tmp" "$go" install -v -trimpath -ldflags="$ldflags" "$pkg/cmd/helm@$HELM_VERSION" 2>&1 |
    awk -v logf="$logfile" '{ print > logf; n++; if (n % 250 == 0) { printf "helm.sh:   %d packages compiled\n", n > "/dev/stderr" } }'
  then
    tail -n 40 "$logfile" >&2
    die "go install failed (full log: $logfile)"
  fi
  [ -x "$tmp/helm" ] || { tail -n 40 "$logfile" >&2; die "go install did not produce helm (log: $logfile)"; }
  "$tmp/helm" version --short >/dev/null || die "the built helm does not run"
  touch "$tmp/.complete"
  rm -rf "$bin_dir"
  mv "$tmp" "$bin_dir"
  log "helm $HELM_VERSION built in $((SECONDS - start)) s"
}

print_env() {
  printf 'export WINIPAM_HELM_BIN=%q\n' "$bin_dir/helm"
}

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
  build) build ;;
  env) build; print_env ;;
  version) echo "$HELM_VERSION" ;;
  *) usage ;;
esac
