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
registry_pid=
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

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg="127.0.0.1:$port"
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
  python3 -c "import urllib.request; urllib.request.urlopen('http://$reg/v2/')" 2>/dev/null && break
  sleep 0.1
done

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
    repo="$reg/r$run-$compression"
    row "kiln push $compression (first)" "$(measure "$kiln" --root "$work/store" push --compression "$compression" big "$repo/kiln:1")"
    row "kiln push $compression (second)" "$(measure "$kiln" --root "$work/store" push --compression "$compression" big "$repo/kiln:1")"
    if [ "$compression" = none ]; then
      flags=()
    else
      flags=(--dest-compress --dest-compress-format gzip)
    fi
    row "skopeo copy $compression (first)" "$(measure skopeo copy --dest-tls-verify=false "${flags[@]}" "oci:$work/store:big" "docker://$repo/skopeo:1")"
    row "skopeo copy $compression (second)" "$(measure skopeo copy --dest-tls-verify=false "${flags[@]}" "oci:$work/store:big" "docker://$repo/skopeo:1")"
    rm -rf "$work/pulled" "$work/skopeo-pulled"
    row "kiln pull $compression (first)" "$(measure "$kiln" --root "$work/pulled" pull "$repo/kiln:1")"
    row "kiln pull $compression (second)" "$(measure "$kiln" --root "$work/pulled" pull "$repo/kiln:1")"
    row "skopeo pull $compression (first)" "$(measure skopeo copy --src-tls-verify=false "docker://$repo/kiln:1" "oci:$work/skopeo-pulled:x")"
    row "skopeo pull $compression (second)" "$(measure skopeo copy --src-tls-verify=false "docker://$repo/kiln:1" "oci:$work/skopeo-pulled:x")"
  done
done
