#!/usr/bin/env bash
# The end-to-end benchmark suite: every project of ../shared/bench/projects
# (small, edit, multistage, bigcontext, fanout), the scenarios of its
# README (cold: --no-cache; warm: nothing changed; edit: one file changed,
# for edit, bigcontext and fanout), built by kiln and, in the same run, by
# BuildKit (when DOCKER_HOST names a daemon) and Buildah (when installed).
# The builders take turns run by run (kiln, BuildKit, Buildah, kiln, ...),
# so a disk that slows down in the middle of the run slows all of them,
# and the disk is synced before each build (see measure).
# Prints every run as "RAW builder project scenario seconds [peak KiB]"
# (kiln's peak resident memory from GNU time; the others build in a daemon
# or in children whose memory that does not show), then the medians and
# each peer's time over kiln's. Needs root (RUN). Nothing is pulled: every
# builder gets the same busybox rootfs, imported, as BASE. Usage:
#   eval "$(scripts/start-dockerd.sh target/dockerd)"; export DOCKER_HOST
#   benches/scripts/suite.sh [RUNS] [PROJECT...]   (default: 3, all five)
set -euo pipefail
runs="${1:-3}"
shift || true
projects=("$@")
[ ${#projects[@]} -gt 0 ] || projects=(small edit multistage bigcontext fanout)
here="$(cd "$(dirname "$0")/../.." && pwd)"
shared="$here/../shared/bench/projects"
work="$(mktemp -d /var/tmp/kiln-suite.XXXXXX)"
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p kiln-cli --manifest-path "$here/Cargo.toml"
kiln="$here/target/release/kiln"
sh "$here/scripts/busybox-rootfs.sh" "$work/busybox.tar" >/dev/null 2>&1
"$kiln" --root "$work/store" import "$work/busybox.tar" busybox:latest >/dev/null

builders=(kiln)
if [ -n "${DOCKER_HOST:-}" ]; then
  /usr/bin/docker import "$work/busybox.tar" 127.0.0.1:1/kiln-bench-busybox >/dev/null
  builders+=(buildkit)
fi
if command -v buildah >/dev/null 2>&1; then
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$work/busybox.tar" / >/dev/null
  buildah commit -q "$ctr" localhost/kiln-bench-busybox >/dev/null
  buildah rm "$ctr" >/dev/null
  builders+=(buildah)
fi

# A context per builder and project, so each edits its own.
context() { echo "$work/ctx-$1-$2"; }
for p in "${projects[@]}"; do
  for b in "${builders[@]}"; do
    dir=$(context "$b" "$p")
    if [ "$p" = bigcontext ]; then
      python3 "$shared/bigcontext/gen-context.py" "$dir" >/dev/null
      cp "$shared/bigcontext/.dockerignore" "$shared/bigcontext/Dockerfile" "$dir/"
    else
      cp -r "$shared/$p" "$dir"
    fi
  done
done

# One build, timed: "SECONDS KIB" (milliseconds kept: a warm kiln build
# takes a few). The disk is synced first, untimed: each builder then pays
# for writing back what it wrote, never for what the one before it left
# dirty (an fsync commits the journal with everything in it).
measure() {
  local start end
  sync
  start=$(date +%s%N)
  /usr/bin/time -f '%M' -o "$work/time" "$@" >/dev/null 2>&1 || {
    echo "FAILED: $*" >&2
    exit 1
  }
  end=$(date +%s%N)
  echo "$(awk -v ns=$((end - start)) 'BEGIN { printf "%.3f", ns / 1e9 }') $(cat "$work/time")"
}

build() {
  local builder=$1 project=$2
  shift 2
  local dir
  dir=$(context "$builder" "$project")
  case "$builder" in
    kiln) measure "$kiln" --root "$work/store" build --progress plain -t "bench-$project" "$@" "$dir" ;;
    buildkit) DOCKER_BUILDKIT=1 measure /usr/bin/docker build --network=none -t "kiln-bench-$project" \
      --build-arg BASE=127.0.0.1:1/kiln-bench-busybox "$@" "$dir" | cut -d' ' -f1 ;;
    buildah) measure buildah build --layers --network none -t "kiln-bench-$project" \
      --build-arg BASE=localhost/kiln-bench-busybox "$@" "$dir" | cut -d' ' -f1 ;;
  esac
}

edit() {
  local dir=$1 project=$2
  case "$project" in
    edit | fanout) sh "$dir/edit.sh" "$dir" ;;
    bigcontext) head -c 1800 /dev/urandom | base64 >>"$dir/src/pkg00/mod00/file00000.txt" ;;
  esac
}

raw="$work/raw"
: >"$raw"
for p in "${projects[@]}"; do
  for b in "${builders[@]}"; do build "$b" "$p" >/dev/null; done
  scenarios=(cold warm)
  case "$p" in edit | bigcontext | fanout) scenarios+=(edit) ;; esac
  for scenario in "${scenarios[@]}"; do
    for _ in $(seq "$runs"); do
      for b in "${builders[@]}"; do
        case "$scenario" in
          cold) t=$(build "$b" "$p" --no-cache) ;;
          warm) t=$(build "$b" "$p") ;;
          edit)
            edit "$(context "$b" "$p")" "$p"
            t=$(build "$b" "$p")
            ;;
        esac
        echo "RAW $b $p $scenario $t" | tee -a "$raw"
      done
    done
  done
done

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo
printf '%-11s %-6s' project scenario
for b in "${builders[@]}"; do printf ' %9s' "$b"; done
for b in "${builders[@]:1}"; do printf ' %12s' "$b/kiln"; done
printf ' %10s\n' "kiln KiB"
for p in "${projects[@]}"; do
  for scenario in cold warm edit; do
    grep -q " $p $scenario " "$raw" || continue
    printf '%-11s %-6s' "$p" "$scenario"
    declare -A m=()
    for b in "${builders[@]}"; do
      m[$b]=$(awk -v b="$b" -v p="$p" -v s="$scenario" '$2 == b && $3 == p && $4 == s { print $5 }' "$raw" | median)
      printf ' %9s' "${m[$b]}"
    done
    for b in "${builders[@]:1}"; do
      printf ' %12s' "$(awk -v a="${m[$b]}" -v k="${m[kiln]}" 'BEGIN { if (k > 0) printf "%.1fx", a / k; else print "-" }')"
    done
    printf ' %10s\n' "$(awk -v p="$p" -v s="$scenario" '$2 == "kiln" && $3 == p && $4 == s { print $6 }' "$raw" | median)"
    unset m
  done
done
if [ -n "${DOCKER_HOST:-}" ]; then
  for p in "${projects[@]}"; do /usr/bin/docker rmi -f "kiln-bench-$p" >/dev/null 2>&1 || true; done
  /usr/bin/docker rmi -f 127.0.0.1:1/kiln-bench-busybox >/dev/null 2>&1 || true
fi
if command -v buildah >/dev/null 2>&1; then
  for p in "${projects[@]}"; do buildah rmi -f "kiln-bench-$p" >/dev/null 2>&1 || true; done
  buildah rmi -f localhost/kiln-bench-busybox >/dev/null 2>&1 || true
fi
