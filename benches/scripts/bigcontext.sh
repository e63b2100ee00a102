#!/usr/bin/env bash
# The bigcontext benchmark (../shared/bench/projects/bigcontext: about
# 20,000 generated files, 203 MB kept after .dockerignore, copied by one
# COPY that a RUN then reads), kiln and BuildKit in one run: cold (kiln: a
# fresh store holding only the imported busybox; BuildKit: --no-cache),
# warm (nothing changed) and edit (2.4 kB appended to one file). Prints
# each run's wall seconds and kiln's peak resident memory (GNU time's %M,
# KiB; BuildKit works inside dockerd, so its client's memory is not
# shown). Needs root (RUN). BuildKit is measured when DOCKER_HOST is set:
#   eval "$(scripts/start-dockerd.sh target/dockerd)"; benches/scripts/bigcontext.sh 3
# Never pulls: both builders get the same busybox rootfs, imported.
#
# Usage: benches/scripts/bigcontext.sh [RUNS]   (default 3)
set -euo pipefail
runs="${1:-3}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
project="$here/../shared/bench/projects/bigcontext"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p kiln-cli --manifest-path "$here/Cargo.toml"
kiln="$here/target/release/kiln"
sh "$here/scripts/busybox-rootfs.sh" "$work/busybox.tar" >/dev/null 2>&1
python3 "$project/gen-context.py" "$work/kiln-ctx" >/dev/null
cp "$project/.dockerignore" "$project/Dockerfile" "$work/kiln-ctx/"
cp -a "$work/kiln-ctx" "$work/docker-ctx"

# "SECONDS KIB" of one command, its output discarded.
measure() {
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>&1
  cat "$work/time"
}

# A new store for each cold build, the earlier ones left in place until
# the end: ext4 passes over inodes freed in the last minute when it
# allocates new ones, so deleting a 20,000-file store just before a build
# would make that build pay for the deletion.
# (Builds run in command substitutions: the current store is a symlink.)
fresh_store() {
  local store
  store="$(mktemp -d "$work/store-XXXX")"
  "$kiln" --root "$store" import "$work/busybox.tar" busybox:latest >/dev/null
  ln -sfn "$store" "$work/store"
  sync
}

kiln_build() {
  if [ "${1:-}" = --no-cache ]; then fresh_store; fi
  measure "$kiln" --root "$(readlink "$work/store")" build --progress plain -t bigcontext \
    "$work/kiln-ctx"
}

docker_build() {
  DOCKER_BUILDKIT=1 measure /usr/bin/docker build --network=none -t kiln-bench-bigcontext \
    --build-arg BASE=127.0.0.1:1/kiln-bench-busybox "$@" "$work/docker-ctx" | cut -d' ' -f1
}

edit() {
  head -c 1800 /dev/urandom | base64 >>"$work/$1-ctx/src/pkg00/mod00/file00000.txt"
}

scenarios() {
  local name=$1
  shift
  for _ in $(seq "$runs"); do echo "$name cold $("$@" --no-cache)"; done
  for _ in $(seq "$runs"); do echo "$name warm $("$@")"; done
  for _ in $(seq "$runs"); do
    edit "$name"
    echo "$name edit $("$@")"
  done
}

echo "builder scenario seconds [peak KiB]"
scenarios kiln kiln_build
echo "kiln store $(du -sk "$(readlink "$work/store")" | cut -f1) KiB after the edits"
if [ -n "${DOCKER_HOST:-}" ]; then
  /usr/bin/docker import "$work/busybox.tar" 127.0.0.1:1/kiln-bench-busybox >/dev/null
  docker_build >/dev/null
  scenarios docker docker_build
  /usr/bin/docker rmi -f kiln-bench-bigcontext 127.0.0.1:1/kiln-bench-busybox >/dev/null 2>&1 || true
fi
