#!/usr/bin/env bash
# The real VPC Resource Controller (the EKS controller whose Windows IPAM winipam replaces), built
# from its Go module and cached, for the tests that run it against the test apiserver and moto.
#
#   vpcrc.sh build       build the binary (and copy its CRDs) if they are not cached yet
#   vpcrc.sh env         build if needed, then print `export WINIPAM_VPCRC_*=...` lines
#   vpcrc.sh versions    print the pinned version
#
# Progress goes to stderr; stdout carries only what callers parse.
set -euo pipefail

# v1.8.2: the newest release the Go module proxy serves (v1.7.19 is refused with 403 here). Its
# pkg/utils/httpClient.go does not carry the repository HEAD's context cancel in
# rateLimitedRoundTripper.RoundTrip, which fails every EC2 body read (../shared/VPC-RC.md).
VPCRC_VERSION=v1.8.2
VPCRC_MODULE=github.com/aws/amazon-vpc-resource-controller-k8s

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# setup_go, go_build and the cache layout are the control plane's: one Go module and build cache.
# shellcheck source=controlplane.sh
source "$script_dir/controlplane.sh"

vpcrc_root="$cache_root/vpcrc-$VPCRC_VERSION"

vlog() { printf 'vpcrc: %s\n' "$*" >&2; }
vdie() { vlog "error: $*"; exit 1; }

vpcrc_build() {
  if [ -f "$vpcrc_root/.complete" ]; then return; fi
  setup_go "the VPC Resource Controller $VPCRC_VERSION"
  mkdir -p "$cache_root"
  exec 8>"$cache_root/.vpcrc-build.lock"
  if command -v flock >/dev/null 2>&1; then flock 8; fi
  if [ -f "$vpcrc_root/.complete" ]; then return; fi
  local start=$SECONDS tmp="$vpcrc_root.tmp" info src module
  rm -rf "$tmp"
  mkdir -p "$tmp"
  info=$("$go" mod download -json "$VPCRC_MODULE@$VPCRC_VERSION" 2>&1) ||
    vdie "go mod download $VPCRC_MODULE@$VPCRC_VERSION failed: $info"
  src=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$src/config/crd/bases" ] || vdie "no config/crd/bases in the module: $info"
  # The main package is the module root and its go.mod has no replace directives, so a scratch
  # module requiring it builds it with the versions its go.mod requires.
  module="$cache_root/vpcrc-src/$VPCRC_VERSION"
  mkdir -p "$module"
  cat >"$module/go.mod" <<GOMOD
module winipam.local/vpcrc

go 1.26.6

require $VPCRC_MODULE $VPCRC_VERSION
GOMOD
  vlog "building $VPCRC_MODULE $VPCRC_VERSION with $("$go" version) (cold: about 5 min on 2 shared cores, sharing the control plane's Go build cache)"
  go_build "$module" "" "$tmp" "$VPCRC_MODULE"
  mv "$tmp/amazon-vpc-resource-controller-k8s" "$tmp/controller"
  mkdir -p "$tmp/crds"
  cp "$src"/config/crd/bases/*.yaml "$tmp/crds/"
  chmod u+w "$tmp"/crds/*.yaml
  touch "$tmp/.complete"
  rm -rf "$vpcrc_root"
  mv "$tmp" "$vpcrc_root"
  vlog "built in $((SECONDS - start)) s: $vpcrc_root/controller ($(du -m "$vpcrc_root/controller" | cut -f1) MB)"
}

vpcrc_env() {
  printf 'export WINIPAM_VPCRC_BIN=%q\n' "$vpcrc_root/controller"
  printf 'export WINIPAM_VPCRC_CRDS=%q\n' "$vpcrc_root/crds"
}

case "${1:-}" in
  build) vpcrc_build ;;
  env) vpcrc_build; vpcrc_env ;;
  versions) printf 'amazon-vpc-resource-controller-k8s %s\n' "$VPCRC_VERSION" ;;
  *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
