#!/usr/bin/env bash
# End-to-end benchmark on ../shared/bench/projects/bigcontext: about 20,000
# files (203 MB kept, the rest excluded by .dockerignore) copied by one COPY.
# Prints wall seconds for each run of: cold (empty cache and stat cache, the
# layer written anew), warm (nothing changed) and edit (one file appended).
# The Dockerfile's RUN is left out until kiln runs RUN steps; everything up
# to and including the COPY is what is measured.
#
# Usage: benches/scripts/bigcontext.sh [RUNS]   (default 3; needs root for
# nothing, writes only under a temp dir)
set -euo pipefail
runs="${1:-3}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
project="$here/../shared/bench/projects/bigcontext"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p kiln-cli --manifest-path "$here/Cargo.toml"
kiln="$here/target/release/kiln"
root="$work/store"

python3 "$project/gen-context.py" "$work/context" >/dev/null
cp "$project/.dockerignore" "$work/context/"
mkdir "$work/df"
printf 'FROM busybox\nWORKDIR /data\nCOPY . /data/\n' >"$work/df/Dockerfile"
sh "$here/scripts/busybox-rootfs.sh" "$work/busybox.tar" >/dev/null 2>&1
"$kiln" --root "$root" import "$work/busybox.tar" busybox >/dev/null

build() {
  local start end ms
  start=$(date +%s%N)
  "$kiln" --root "$root" build -f "$work/df/Dockerfile" -t big "$work/context" \
    2>"$work/log" >/dev/null
  end=$(date +%s%N)
  ms=$(((end - start) / 1000000))
  printf '%s %d.%02d s  (%s; %s)\n' "$1" $((ms / 1000)) $((ms % 1000 / 10)) \
    "$(grep -h 'files hashed' "$work/log" | sed 's/^#[0-9]* //')" \
    "$(grep -hE '^#3 (CACHED|DONE)' "$work/log" | sed 's/^#3 //')"
}

for _ in $(seq "$runs"); do
  rm -rf "$root/kiln/cache" "$root/kiln/statcache"
  "$kiln" --root "$root" prune >/dev/null
  sync
  build cold
done
for _ in $(seq "$runs"); do build warm; done
edited="$work/context/src/pkg00/mod00/file00000.txt"
for n in $(seq "$runs"); do
  echo "edit $n" >>"$edited"
  build edit
done
