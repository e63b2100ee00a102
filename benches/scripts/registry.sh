#!/usr/bin/env bash
# Push and pull of a ~230 MB image (the bigcontext project's 20,000-file
# COPY over busybox) to a docker-registry on 127.0.0.1 that this script
# starts, kiln beside skopeo in the same run, first and second time.
# skopeo reads kiln's store directly (it is an OCI layout) and writes an
# OCI layout when pulling; both verify digests. Rows: `none` pushes the
# store's plain tars as they are (like for like with skopeo's default),
# `gzip` compresses on the way out (kiln: all cores; skopeo: Go's gzip).
# Prints seconds and peak resident memory (KiB) per run.
#
# Usage: benches/scripts/registry.sh [RUNS]   (default 3)
set -euo pipefail
runs="${1:-3}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p kiln-cli --manifest-path "$here/Cargo.toml"
kiln="$here/target/release/kiln"
export KILN_REGISTRY_ALLOW=127.0.0.1
sh "$here/scripts/busybox-rootfs.sh" "$work/busybox.tar" >/dev/null 2>&1
"$kiln" --root "$work/store" import "$work/busybox.tar" busybox:latest >/dev/null
python3 "$here/../shared/bench/projects/bigcontext/gen-context.py" "$work/ctx" >/dev/null
cp "$here/../shared/bench/projects/bigcontext/.dockerignore" "$work/ctx/"
printf 'FROM busybox\nCOPY . /data/\n' >"$work/ctx/Dockerfile"
"$kiln" --root "$work/store" build -q -t big "$work/ctx" >/dev/null

# A fresh registry for every measurement: no blob is known to it from an
# earlier row, so neither client can mount one from another repository.
registry_pid=
start_registry() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null || true
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  reg="127.0.0.1:$port"
  rm -rf "$work/registry"
  cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $reg
YML
  docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://$reg/v2/')" 2>/dev/null && return
    sleep 0.1
  done
  echo "docker-registry did not start" >&2
  exit 1
}

measure() {
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" || {
    cat "$work/err" >&2
    exit 1
  }
  cat "$work/time"
}

row() { printf '%-34s %s\n' "$1" "$2"; }
for run in $(seq "$runs"); do
  echo "run $run"
  for compression in none gzip; do
    if [ "$compression" = none ]; then
      flags=()
    else
      flags=(--dest-compress --dest-compress-format gzip)
    fi
    # kiln: compressing is part of a first push (its memo is cleared).
    start_registry
    rm -rf "$work/store/kiln/compressed"
    row "kiln push $compression (first)" "$(measure "$kiln" --root "$work/store" push --compression "$compression" big "$reg/big:1")"
    row "kiln push $compression (second)" "$(measure "$kiln" --root "$work/store" push --compression "$compression" big "$reg/big:1")"
    rm -rf "$work/pulled"
    row "kiln pull $compression (first)" "$(measure "$kiln" --root "$work/pulled" pull "$reg/big:1")"
    row "kiln pull $compression (second)" "$(measure "$kiln" --root "$work/pulled" pull "$reg/big:1")"
    # skopeo: the same image from the store (an OCI layout), its own registry.
    start_registry
    row "skopeo push $compression (first)" "$(measure skopeo copy --dest-tls-verify=false "${flags[@]}" "oci:$work/store:big" "docker://$reg/big:1")"
    row "skopeo push $compression (second)" "$(measure skopeo copy --dest-tls-verify=false "${flags[@]}" "oci:$work/store:big" "docker://$reg/big:1")"
    rm -rf "$work/skopeo-pulled"
    row "skopeo pull $compression (first)" "$(measure skopeo copy --src-tls-verify=false "docker://$reg/big:1" "oci:$work/skopeo-pulled:x")"
    row "skopeo pull $compression (second)" "$(measure skopeo copy --src-tls-verify=false "docker://$reg/big:1" "oci:$work/skopeo-pulled:x")"
  done
done
