#!/usr/bin/env bash
# End-to-end build benchmark on ../shared/bench/projects (small, edit,
# multistage, bigcontext), the scenarios of ../shared/bench/README.md:
# cold (--no-cache), warm (nothing changed), edit (one file changed:
# edit.sh for `edit`, one appended line for `bigcontext`). Prints the
# median wall time of RUNS runs of each, in seconds. Needs root (RUN).
#
# Usage: benches/scripts/projects.sh [RUNS]   (default 5)
set -euo pipefail
runs="${1:-5}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
projects="$here/../shared/bench/projects"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p kiln-cli --manifest-path "$here/Cargo.toml"
kiln="$here/target/release/kiln"
root="$work/store"
sh "$here/scripts/busybox-rootfs.sh" "$work/busybox.tar" >/dev/null 2>&1
"$kiln" --root "$root" import "$work/busybox.tar" busybox:latest >/dev/null

# Copies of the projects, so edits never touch ../shared.
for p in small edit multistage; do cp -r "$projects/$p" "$work/$p"; done
python3 "$projects/bigcontext/gen-context.py" "$work/bigcontext" >/dev/null
cp "$projects/bigcontext/.dockerignore" "$projects/bigcontext/Dockerfile" "$work/bigcontext/"

seconds() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null 2>&1
  end=$(date +%s%N)
  echo $(((end - start) / 1000000))
}

median() {
  sort -n | awk '{ a[NR] = $1 } END { m = a[int((NR + 1) / 2)]; printf "%d.%03d", m / 1000, m % 1000 }'
}

edit() {
  case "$1" in
    edit) sh "$work/edit/edit.sh" "$work/edit" ;;
    bigcontext) echo "edit $(date +%s%N)" >>"$work/bigcontext/src/pkg00/mod00/file00000.txt" ;;
  esac
}

printf '%-12s %8s %8s %8s\n' project cold warm edit
for p in small edit multistage bigcontext; do
  build=("$kiln" --root "$root" build -t "$p" "$work/$p")
  cold=$(for _ in $(seq "$runs"); do seconds "${build[@]}" --no-cache; done | median)
  warm=$(for _ in $(seq "$runs"); do seconds "${build[@]}"; done | median)
  if [ "$p" = edit ] || [ "$p" = bigcontext ]; then
    changed=$(for _ in $(seq "$runs"); do edit "$p"; seconds "${build[@]}"; done | median)
  else
    changed=-
  fi
  printf '%-12s %8s %8s %8s\n' "$p" "$cold" "$warm" "$changed"
done
