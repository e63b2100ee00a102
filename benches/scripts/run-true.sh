#!/usr/bin/env bash
# Container start-to-exit: `RUN true` in a build (the step's own time as
# kiln reports it) and `kiln run --rm busybox true` (the whole command),
# each the median of RUNS runs. Needs root.
#
# Usage: benches/scripts/run-true.sh [RUNS]   (default 20)
set -euo pipefail
runs="${1:-20}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p kiln-cli --manifest-path "$here/Cargo.toml"
kiln="$here/target/release/kiln"
root="$work/store"
sh "$here/scripts/busybox-rootfs.sh" "$work/busybox.tar" >/dev/null 2>&1
"$kiln" --root "$root" import "$work/busybox.tar" busybox >/dev/null
mkdir "$work/ctx"
printf 'FROM busybox\nRUN true\n' >"$work/ctx/Dockerfile"
"$kiln" --root "$root" build "$work/ctx" >/dev/null 2>&1 # snapshots made once

step=$(for _ in $(seq "$runs"); do
  "$kiln" --root "$root" build --no-cache --progress json "$work/ctx" 2>&1 >/dev/null |
    grep '"event":"done","id":2' | sed 's/.*"duration":\([0-9.e-]*\).*/\1/'
done | sort -g | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] * 1000 }')
whole=$(for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  "$kiln" --root "$root" run --rm busybox true
  echo $((($(date +%s%N) - start) / 1000))
done | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
echo "RUN true step: ${step} ms (the step as the executor times it: snapshots, container, layer, cache entry)"
echo "kiln run --rm busybox true: ${whole} µs (whole command)"
