#!/usr/bin/env bash
# Disk used by the same builds in kiln's store and in Docker's (BuildKit
# through a private dockerd with its own data root, started and stopped
# here): each project of ../shared/bench/projects built once on both sides
# from the same imported busybox rootfs (never pulling, no network). kiln:
# `du -sx` of a fresh store holding the base and the build. Docker: what
# its data root grew by from before the base was imported (its overlay2
# layers, image metadata and BuildKit's cache of the build stages); the
# base and the build are removed again before the next project.
#
# Usage: benches/scripts/store-size.sh [PROJECT...]   (default: fanout bigcontext multistage)
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
projects="$here/../shared/bench/projects"
work="$(mktemp -d)"
dockerd_dir="$work/dockerd"
trap '"$here/scripts/start-dockerd.sh" --stop "$dockerd_dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
[ $# -gt 0 ] || set -- fanout bigcontext multistage

cargo build --release -q -p kiln-cli --manifest-path "$here/Cargo.toml"
kiln="$here/target/release/kiln"
sh "$here/scripts/busybox-rootfs.sh" "$work/busybox.tar" >/dev/null 2>&1
export "$("$here/scripts/start-dockerd.sh" "$dockerd_dir")"
docker=/usr/bin/docker

kib() { du -sxk "$1" | cut -f1; }

printf '%-12s %10s %10s %8s\n' project kiln_KiB docker_KiB ratio
for p in "$@"; do
  ctx="$work/ctx-$p"
  if [ "$p" = bigcontext ]; then
    python3 "$projects/bigcontext/gen-context.py" "$ctx" >/dev/null
    cp "$projects/bigcontext/.dockerignore" "$projects/bigcontext/Dockerfile" "$ctx/"
  else
    cp -r "$projects/$p" "$ctx"
  fi
  store="$work/store-$p"
  "$kiln" --root "$store" import "$work/busybox.tar" busybox:latest >/dev/null
  "$kiln" --root "$store" build --progress quiet -t "$p" "$ctx" >/dev/null
  docker_before=$(kib "$dockerd_dir/data")
  "$docker" import "$work/busybox.tar" 127.0.0.1:1/kiln-bench-busybox >/dev/null
  DOCKER_BUILDKIT=1 "$docker" build -q --network=none -t "kiln-bench-$p" \
    --build-arg BASE=127.0.0.1:1/kiln-bench-busybox "$ctx" >/dev/null
  kiln_used=$(kib "$store")
  docker_used=$(($(kib "$dockerd_dir/data") - docker_before))
  ratio=$(awk -v k="$kiln_used" -v d="$docker_used" 'BEGIN { printf "%.2f", k / d }')
  printf '%-12s %10d %10d %8s\n' "$p" "$kiln_used" "$docker_used" "$ratio"
  # The next project starts from Docker's state after this one.
  "$docker" builder prune -af >/dev/null
  "$docker" rmi "kiln-bench-$p" 127.0.0.1:1/kiln-bench-busybox >/dev/null
done
