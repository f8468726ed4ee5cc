#!/usr/bin/env bash
# The winipam image.
#
#   image.sh build TAG [OUT.tar]
#       With docker or buildah that can reach the base images: `docker build` of the Dockerfile
#       (what users build). Otherwise the offline image below, from the release binary
#       (`cargo build --release --locked`, or $WINIPAM_BINARY when set). OUT.tar (default
#       winipam-TAG.tar) is a docker-archive.
#   image.sh offline BINARY REF OUT.tar
#       Assembles the Dockerfile's runtime stage offline from BINARY, with umoci and skopeo
#       (Debian packages): the binary at the Dockerfile's path, the shared libraries it links,
#       the CA bundle, /etc/passwd and /etc/group with `nonroot` (65532), /tmp (1777), and the
#       Dockerfile's USER, EXPOSE and ENTRYPOINT. Writes a docker-archive that `ctr images
#       import` and `docker load` take.
#
# The offline image reads its settings from the Dockerfile's runtime stage, and a test
# (tests/cluster/image.rs) compares the assembled image's config with the Dockerfile, so the two
# cannot drift. This host's glibc (Debian 12) is the one distroless cc-debian12 ships.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The runtime stage of the Dockerfile: its lines from the last FROM on.
runtime_stage() { awk '/^FROM /{ buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' "$root/Dockerfile"; }

# Values of instruction $1 in the runtime stage (one line per instruction).
instruction() { runtime_stage | sed -n "s/^$1[[:space:]]\{1,\}//p"; }

offline() {
  local binary=$1 ref=$2 out=$3
  for tool in umoci skopeo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is needed (apt-get install $tool)"
  done
  [ -x "$binary" ] || die "$binary is not an executable"
  local target user entrypoint ports
  # COPY --from=builder /winipam /usr/local/bin/winipam
  target=$(instruction COPY | awk '{ print $NF }')
  user=$(instruction USER)
  entrypoint=$(instruction ENTRYPOINT)
  ports=$(instruction EXPOSE)
  [ -n "$target" ] && [ -n "$user" ] && [ -n "$entrypoint" ] || die "cannot read the runtime stage of the Dockerfile"

  local work
  work=$(mktemp -d)
  local rootfs="$work/rootfs"
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot" "$(dirname "$rootfs$target")"
  chmod 1777 "$rootfs/tmp"
  # Debug sections are not needed to run (the test profile's binary carries line tables).
  objcopy --strip-debug "$binary" "$rootfs$target" 2>/dev/null || cp "$binary" "$rootfs$target"
  chmod 0755 "$rootfs$target"
  # The shared libraries the binary links, at the paths the loader looks for them.
  local lib
  for lib in $(ldd "$binary" | awk '/=> \// { print $3 } /^[[:space:]]*\/[^ ]*ld-linux/ { print $1 }'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  chown 65532:65532 "$rootfs/home/nonroot"

  assemble "$rootfs" "$ref" "$out" "$user" "$entrypoint" "$ports"
  rm -rf "$work"
}

# An image of ROOTFS with USER, ENTRYPOINT (a JSON array) and PORTS (EXPOSE's words), written as
# the docker-archive OUT named REF.
assemble() {
  local rootfs=$1 ref=$2 out=$3 user=$4 entrypoint=$5 ports=$6
  local work
  work=$(mktemp -d)
  local layout="$work/oci" bundle="$work/bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:img"
  umoci unpack --image "$layout:img" "$bundle" >/dev/null
  cp -a "$rootfs/." "$bundle/rootfs/"
  umoci repack --image "$layout:img" "$bundle"
  # ENTRYPOINT ["/usr/local/bin/winipam", "run"] -> one --config.entrypoint per element.
  local args=(--image "$layout:img" --os linux --architecture amd64 --clear config.entrypoint)
  [ -n "$user" ] && args+=(--config.user "$user")
  local element
  while IFS= read -r element; do args+=(--config.entrypoint "$element"); done < <(printf '%s' "$entrypoint" | jq -r '.[]')
  for element in $ports; do
    case "$element" in */*) ;; *) element="$element/tcp" ;; esac
    args+=(--config.exposedports "$element")
  done
  umoci config "${args[@]}"
  umoci gc --layout "$layout"
  rm -f "$out"
  skopeo copy --quiet "oci:$layout:img" "docker-archive:$out:$ref" >&2
  rm -rf "$work"
  log "built $ref into $out ($(du -h "$out" | cut -f1))"
}

build() {
  local tag=$1 out=${2:-winipam-$1.tar}
  local engine
  for engine in docker buildah; do
    command -v "$engine" >/dev/null 2>&1 || continue
    log "building the Dockerfile with $engine"
    if [ "$engine" = docker ]; then
      docker build -t "winipam:$tag" "$root" && docker save -o "$out" "winipam:$tag" && return
    else
      buildah bud -t "winipam:$tag" "$root" && buildah push "winipam:$tag" "docker-archive:$out:winipam:$tag" && return
    fi
    log "$engine could not build the Dockerfile (base images unreachable?): building offline"
  done
  local binary="${WINIPAM_BINARY:-}"
  if [ -z "$binary" ]; then
    (cd "$root" && cargo build --release --locked --bin winipam)
    binary="${CARGO_TARGET_DIR:-$root/target}/release/winipam"
  fi
  offline "$binary" "localhost/winipam:$tag" "$out"
}

case "${1:-}" in
  build) shift; [ $# -ge 1 ] || die "usage: $0 build TAG [OUT.tar]"; build "$@" ;;
  offline) shift; [ $# -eq 3 ] || die "usage: $0 offline BINARY REF OUT.tar"; offline "$@" ;;
  # A one-binary image (the cluster's pause image): image.sh static BINARY REF OUT.tar
  static)
    shift
    [ $# -eq 3 ] || die "usage: $0 static BINARY REF OUT.tar"
    dir=$(mktemp -d)
    install -D -m 0755 "$1" "$dir/rootfs/$(basename "$1")"
    assemble "$dir/rootfs" "$2" "$3" "" "[\"/$(basename "$1")\"]" ""
    rm -rf "$dir"
    ;;
  *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
