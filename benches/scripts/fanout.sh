#!/usr/bin/env bash
# The multi-stage fan-out benchmark (../shared/bench/projects/fanout: a build
# stage of 30,000 small files, a final stage copying its 17 kB result),
# kiln and BuildKit in one run: cold (--no-cache), warm (nothing changed)
# and edit (edit.sh, one app source line). Prints each run's wall time in
# seconds and kiln's peak resident memory (GNU time's %M, KiB); BuildKit's
# work happens in dockerd, so the client's memory says nothing and is not
# shown. Needs root (RUN). BuildKit is measured when DOCKER_HOST is set:
#   eval "$(scripts/start-dockerd.sh target/dockerd)"; benches/scripts/fanout.sh 3
# (/usr/bin/docker: Debian's client, whose BuildKit needs no buildx.) Never pulls: both builders get the same busybox rootfs, imported.
#
# Usage: benches/scripts/fanout.sh [RUNS]   (default 3)
set -euo pipefail
runs="${1:-3}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p kiln-cli --manifest-path "$here/Cargo.toml"
kiln="$here/target/release/kiln"
sh "$here/scripts/busybox-rootfs.sh" "$work/busybox.tar" >/dev/null 2>&1
"$kiln" --root "$work/store" import "$work/busybox.tar" busybox:latest >/dev/null
cp -r "$here/../shared/bench/projects/fanout" "$work/kiln-ctx"
cp -r "$here/../shared/bench/projects/fanout" "$work/docker-ctx"

# "SECONDS KIB" of one command, its output discarded.
measure() {
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>&1
  cat "$work/time"
}

kiln_build() {
  measure "$kiln" --root "$work/store" build --progress plain -t fanout "$@" "$work/kiln-ctx"
}

docker_build() {
  DOCKER_BUILDKIT=1 measure /usr/bin/docker build --network=none -t kiln-bench-fanout \
    --build-arg BASE=127.0.0.1:1/kiln-bench-busybox "$@" "$work/docker-ctx" | cut -d' ' -f1
}

scenarios() {
  local name=$1
  shift
  for _ in $(seq "$runs"); do echo "$name cold $("$@" --no-cache)"; done
  for _ in $(seq "$runs"); do echo "$name warm $("$@")"; done
  for _ in $(seq "$runs"); do
    sh "$work/${name}-ctx/edit.sh" "$work/${name}-ctx"
    echo "$name edit $("$@")"
  done
}

echo "builder scenario seconds [peak KiB]"
kiln_build >/dev/null
scenarios kiln kiln_build
if [ -n "${DOCKER_HOST:-}" ]; then
  /usr/bin/docker import "$work/busybox.tar" 127.0.0.1:1/kiln-bench-busybox >/dev/null
  docker_build >/dev/null
  scenarios docker docker_build
  /usr/bin/docker rmi -f kiln-bench-fanout 127.0.0.1:1/kiln-bench-busybox >/dev/null 2>&1 || true
fi
