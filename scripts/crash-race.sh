#!/usr/bin/env bash
# Crash-and-race harness for the store: on one store, each round starts two
# builds, a `kiln run`, a `kiln import`, a `kiln load` and a `kiln prune`
# (sometimes `--all`, sometimes an `rmi`) at once, SIGKILLs some of them at
# random moments, then requires `kiln check` (blobs, images and snapshots)
# to pass, a rebuild and a run to succeed, and every process that was not
# killed to have succeeded.
#
#   scripts/crash-race.sh [ROUNDS]     (default 10; CI runs 10)
#
# Environment: KILN (the binary; default target/debug/kiln, built if
# missing), BUSYBOX_ROOTFS_SH (the script writing the busybox rootfs tar;
# default scripts/busybox-rootfs.sh), SEED (for $RANDOM).
# Prints the counts (rounds, processes, kills, races, broken live
# processes, corrupt stores); exits 1 if any process that was not killed
# failed or any store was found corrupt. Needs root (RUN steps, mounts).
set -uo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-10}
RANDOM=${SEED:-$$}
kiln=${KILN:-target/debug/kiln}
if [[ ! -x $kiln ]]; then
    cargo build --locked -p kiln-cli >&2 || exit 1
fi
kiln=$(realpath "$kiln")
rootfs_sh=${BUSYBOX_ROOTFS_SH:-scripts/busybox-rootfs.sh}

work=$(mktemp -d /tmp/kiln-crash-race.XXXXXX)
root=$work/store
cleanup() {
    # Only the processes this script started (their pids are in $work/pids).
    if [[ -f $work/pids ]]; then
        while read -r pid; do kill -KILL "$pid" 2>/dev/null; done <"$work/pids"
    fi
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

k() { "$kiln" --root "$root" "$@"; }

sh "$rootfs_sh" "$work/busybox.tar" >/dev/null || exit 1
k import "$work/busybox.tar" busybox >/dev/null || exit 1

# Two projects: files to COPY, RUN steps that write and wait a little.
for p in one two; do
    mkdir -p "$work/$p/data"
    head -c $((1 << 20)) /dev/urandom >"$work/$p/data/blob"
    for n in $(seq 1 40); do echo "$p $n" >"$work/$p/data/f$n"; done
done
cat >"$work/one/Dockerfile" <<'EOF'
FROM busybox
COPY data /data
RUN mkdir /made && for n in 1 2 3 4; do cp /data/blob /made/b$n; done && sleep 0.3
RUN ls /made /data | wc -l > /count
EOF
cat >"$work/two/Dockerfile" <<'EOF'
FROM busybox AS base
COPY data /src
RUN tar -cf /src.tar /src && sleep 0.2
FROM busybox
COPY --from=base /src.tar /src.tar
RUN tar -tf /src.tar | wc -l > /entries
EOF
k build -t one "$work/one" >/dev/null 2>&1 || exit 1
k save -o "$work/one.tar" one || exit 1

processes=0 kills=0 races=0 broken=0 corrupt=0

# Starts "$@" in the background, logging to $work/log.N; records the pid.
declare -a pids names
start() {
    local n=${#pids[@]}
    "$@" >"$work/log.$n" 2>&1 &
    pids[n]=$!
    names[n]="$*"
    echo $! >>"$work/pids"
    processes=$((processes + 1))
}

for round in $(seq 1 "$rounds"); do
    pids=() names=()
    : >"$work/pids"
    # A fresh rootfs each round, so the import writes new blobs.
    cp "$work/busybox.tar" "$work/import.tar"
    mkdir -p "$work/noise"
    head -c $((2 << 20)) /dev/urandom >"$work/noise/noise"
    tar -rf "$work/import.tar" -C "$work/noise" noise

    nocache=()
    ((RANDOM % 2)) && nocache=(--no-cache)
    start k build "${nocache[@]}" -t one "$work/one"
    start k build --no-cache -t "two:$round" "$work/two"
    start k run --rm --network none busybox sh -c 'cat /bin/busybox >/dev/null; ls -R /bin /etc >/dev/null'
    start k import "$work/import.tar" "imported:$round"
    start k load -i "$work/one.tar"
    case $((RANDOM % 3)) in
        0) start k prune ;;
        1) start k prune --all ;;
        2) if ((round > 1)); then start k rmi "imported:$((round - 1))"; else start k prune; fi ;;
    esac
    races=$((races + ${#pids[@]} - 1))

    # Kill about half of them, each at a random moment in its first 1.2 s.
    declare -A killed=()
    for n in "${!pids[@]}"; do
        if ((RANDOM % 2)); then
            delay=$((RANDOM % 12))
            (sleep "$((delay / 10)).$((delay % 10))"
             kill -KILL "${pids[n]}" 2>/dev/null) &
            killed[$n]=$!
        fi
    done
    for n in "${!pids[@]}"; do
        wait "${pids[n]}" 2>/dev/null
        status=$?
        if [[ -n ${killed[$n]:-} ]]; then
            kill "${killed[$n]}" 2>/dev/null
            if ((status == 137)); then
                kills=$((kills + 1))
                continue
            fi
        fi
        if ((status != 0)); then
            broken=$((broken + 1))
            echo "round $round: '${names[n]}' was not killed but failed ($status):" >&2
            sed 's/^/    /' "$work/log.$n" >&2
        fi
    done
    wait 2>/dev/null
    unset killed

    # The store must be whole, and work.
    if ! out=$(k check 2>&1); then
        corrupt=$((corrupt + 1))
        echo "round $round: kiln check failed:" >&2
        echo "$out" | sed 's/^/    /' >&2
    fi
    if ! out=$(k build -t one "$work/one" 2>&1) ||
        ! out=$(k run --rm --network none one cat /count 2>&1); then
        corrupt=$((corrupt + 1))
        echo "round $round: the rebuild or run failed:" >&2
        echo "$out" | sed 's/^/    /' >&2
    fi
done

# What the dead left is gone once a writer has run (the rebuild above).
leftovers=$(($(find "$root/blobs/sha256" "$root/kiln/snapshots" "$root" \
    -maxdepth 1 -name '.tmp-*' 2>/dev/null | wc -l) +
    $(find "$root/kiln/tmp" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)))
echo "crash-race: rounds $rounds, processes $processes, kills $kills, races $races," \
    "broken live processes $broken, corrupt stores $corrupt, leftovers $leftovers"
((broken == 0 && corrupt == 0))
