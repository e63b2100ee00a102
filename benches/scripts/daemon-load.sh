#!/usr/bin/env bash
# Load on kiln serve and on podman's Docker-compatible service (Debian's
# podman, `podman system service`), in the same run: 50 concurrent Docker
# SDK clients for DURATION seconds (a fifth building, two fifths running
# `run --rm busybox true`, two fifths listing images), then p50/p99 per
# kind, failed requests, and what each daemon left behind (containers,
# processes, mounts). Both get the same busybox image (kiln's, saved and
# loaded into podman) and give containers no network. Needs root.
#
# Usage: benches/scripts/daemon-load.sh [DURATION] [CLIENTS]   (60, 50)
#   (KILN=path/to/kiln: that binary instead of a release build)
set -euo pipefail
duration="${1:-60}"
clients="${2:-50}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/kiln-daemon-load.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
command -v podman >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null
if [ -z "${KILN:-}" ]; then
  cargo build --release -q -p kiln-cli --manifest-path "$here/Cargo.toml"
fi
kiln="${KILN:-$here/target/release/kiln}"
venv="$here/target/docker-py/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q docker==7.0.0

root="$work/kiln"
sh "$here/scripts/busybox-rootfs.sh" "$work/busybox.tar" >/dev/null 2>&1
"$kiln" --root "$root" import "$work/busybox.tar" busybox-rootfs >/dev/null
mkdir "$work/ctx"
printf 'FROM busybox-rootfs\nCMD ["sh"]\n' >"$work/ctx/Dockerfile"
"$kiln" --root "$root" build -q --network none -t busybox:latest "$work/ctx" >/dev/null
"$kiln" --root "$root" save --format docker -o "$work/busybox-image.tar" busybox:latest

mounts() { wc -l </proc/self/mountinfo; }

KILN_REGISTRY_ALLOW=127.0.0.1 "$kiln" --root "$root" serve --host "unix://$work/kiln.sock" \
  --default-network none 2>"$work/kiln.log" &
kiln_pid=$!
pids+=("$kiln_pid")
podman_flags=(--root "$work/podman/root" --runroot "$work/podman/run" --cgroup-manager cgroupfs
  --events-backend file --storage-driver overlay)
# podman's own config for this run: no default ulimits (its nofile of
# 1048576 is over this machine's hard limit, and every start fails), and
# no registry a short name could be looked up in: its images are the one
# loaded here, and nothing is ever pulled.
printf '[containers]\ndefault_ulimits = []\n' >"$work/containers.conf"
printf 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n' >"$work/registries.conf"
export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_REGISTRIES_CONF="$work/registries.conf"
podman "${podman_flags[@]}" load -q -i "$work/busybox-image.tar" >/dev/null
podman "${podman_flags[@]}" system service --time=0 "unix://$work/podman.sock" 2>"$work/podman.log" &
podman_pid=$!
pids+=("$podman_pid")
for socket in "$work/kiln.sock" "$work/podman.sock"; do
  for _ in $(seq 1 100); do [ -S "$socket" ] && break; sleep 0.1; done
done

for daemon in kiln podman; do
  pid_var="${daemon}_pid"
  before=$(mounts)
  result=$("$venv/bin/python" "$here/benches/scripts/daemon_load.py" \
    "unix://$work/$daemon.sock" "$duration" "$clients" "${!pid_var}")
  sleep 1
  echo "$daemon: $result" | sed "s/}\$/, \"mounts_before\": $before, \"mounts_after\": $(mounts)}/"
done
