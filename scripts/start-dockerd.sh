#!/usr/bin/env bash
# Starts a private dockerd (Debian's docker.io) for the differential suite
# (crates/kiln-cli/tests/differential.rs) and prints `DOCKER_HOST=unix://...`.
#   eval "$(scripts/start-dockerd.sh DIR)"   ...   scripts/start-dockerd.sh --stop DIR
# Everything it owns lives under DIR (default target/dockerd): data root,
# exec root, pid file, socket, log. It listens on that unix socket only
# (no TCP), makes no bridge and touches no iptables, so nothing it runs can
# reach a network; the suite's builds also pass --network=none and name
# every base image under 127.0.0.1:1/, so a pull attempt is refused locally
# instead of going to Docker Hub.
set -euo pipefail

if [ "${1:-}" = --stop ]; then
  dir=${2:-target/dockerd}
  if [ -f "$dir/dockerd.pid" ]; then
    pid=$(cat "$dir/dockerd.pid")
    kill "$pid" 2>/dev/null || true
    # dockerd removes its pid file once it has stopped its containerd.
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
  fi
  if [ -f "$dir/exec-root" ]; then
    rm -rf "$(cat "$dir/exec-root")"
    rm -f "$dir/exec-root"
  fi
  exit 0
fi

dir=${1:-target/dockerd}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
dockerd=/usr/sbin/dockerd
if [ ! -x "$dockerd" ]; then
  echo "start-dockerd.sh: $dockerd not found (apt-get install docker.io; scripts/install-test-deps.sh does)" >&2
  exit 1
fi
sock="$dir/docker.sock"
if [ -f "$dir/dockerd.pid" ] && kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; then
  echo "DOCKER_HOST=unix://$sock"
  exit 0
fi
mkdir -p "$dir/data" "$dir/exec"
# The exec root holds containerd's socket, whose path must stay under the
# 108-byte limit of a unix socket address: keep it short under /run.
exec_root=$(mktemp -d /run/kiln-dockerd.XXXXXX)
echo "$exec_root" >"$dir/exec-root"

# setsid: the daemon outlives this script (and a test harness's process
# group) until --stop.
setsid "$dockerd" \
  --host "unix://$sock" \
  --data-root "$dir/data" \
  --exec-root "$exec_root" \
  --pidfile "$dir/dockerd.pid" \
  --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  --userland-proxy=false \
  --log-level=warn \
  >"$dir/dockerd.log" 2>&1 </dev/null &
started=$!

for _ in $(seq 1 150); do
  if DOCKER_HOST="unix://$sock" /usr/bin/docker version >/dev/null 2>&1; then
    echo "DOCKER_HOST=unix://$sock"
    exit 0
  fi
  if ! kill -0 "$started" 2>/dev/null; then
    break
  fi
  sleep 0.2
done
echo "start-dockerd.sh: dockerd did not answer on $sock; its log:" >&2
tail -n 30 "$dir/dockerd.log" >&2
exit 1
