#!/usr/bin/env bash
# Builds side by side on one store: one build of `RUN sleep 3` alone, then
# two such builds (different Dockerfiles) started together, the wall time
# until both are done, median of RUNS; and `kiln images` while a build is
# in its RUN step, median and worst of 10 calls per run. Needs root.
#
# Usage: benches/scripts/parallel-builds.sh [RUNS]   (default 5)
# KILN=path uses that binary instead of building target/release/kiln.
set -euo pipefail
runs="${1:-5}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ -z ${KILN:-} ]]; then
  cargo build --release -q -p kiln-cli --manifest-path "$here/Cargo.toml"
fi
kiln="$(realpath "${KILN:-$here/target/release/kiln}")"
root="$work/store"
k() { "$kiln" --root "$root" "$@"; }
now() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

sh "$here/scripts/busybox-rootfs.sh" "$work/busybox.tar" >/dev/null 2>&1
k import "$work/busybox.tar" busybox >/dev/null
for name in a b; do
  mkdir "$work/$name"
  printf 'FROM busybox\nRUN sleep 3 && echo %s > /%s\n' "$name" "$name" >"$work/$name/Dockerfile"
  k build -t "$name" "$work/$name" >/dev/null 2>&1 # snapshots made once
done

alone=$(for _ in $(seq "$runs"); do
  start=$(now)
  k build --no-cache "$work/a" >/dev/null 2>&1
  echo $((($(now) - start) / 1000000))
done | median)

together=$(for _ in $(seq "$runs"); do
  start=$(now)
  k build --no-cache "$work/a" >/dev/null 2>&1 &
  first=$!
  k build --no-cache "$work/b" >/dev/null 2>&1
  wait "$first"
  echo $((($(now) - start) / 1000000))
done | median)

images=$(for _ in $(seq "$runs"); do
  k build --no-cache "$work/a" >/dev/null 2>&1 &
  build=$!
  # In its RUN step once the container's upper dir exists.
  until compgen -G "$root/kiln/tmp/*/upper" >/dev/null; do sleep 0.05; done
  for _ in $(seq 10); do
    start=$(now)
    k images >/dev/null
    echo $((($(now) - start) / 1000))
  done
  wait "$build"
done | sort -n | awk '{ a[NR] = $1 } END { printf "%d %d", a[int((NR + 1) / 2)], a[NR] }')

echo "one build of RUN sleep 3: ${alone} ms (median of $runs)"
echo "two such builds started together, until both are done: ${together} ms (median of $runs)"
echo "kiln images during a build's RUN step: median ${images% *} µs, worst ${images#* } µs ($((runs * 10)) calls)"
