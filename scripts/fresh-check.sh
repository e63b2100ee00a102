#!/usr/bin/env bash
# Runs the README's two set-up commands, as written, on a bare Debian 12:
# `debootstrap --variant=minbase bookworm` into a temporary root (from the
# mirror apt here is configured with), this machine's Rust toolchain
# bind-mounted read-only, the repository copied in without ../shared, and
# the commands run inside a mount and pid namespace whose root is that tree
# (pivot_root, not chroot: kiln's own containers pivot_root too). So a
# package the scripts forget to install fails here, not on a user's machine.
# Reports which step failed. Needs root; takes several minutes.
#   scripts/fresh-check.sh [WORKDIR]   (default: a new dir under /var/tmp)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work=${1:-$(mktemp -d /var/tmp/kiln-fresh-check.XXXXXX)}
root="$work/root"
started=$SECONDS

step() { printf '\n== fresh-check: %s (%ds)\n' "$1" $((SECONDS - started)); }
fail() { printf '\nfresh-check FAILED at: %s\n' "$1" >&2; exit 1; }

# The Debian mirror apt already uses (deb822 sources first, then the
# one-line format); nothing else is contacted.
mirror() {
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$uri" ]; then
    uri=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  [ -n "$uri" ] || fail "finding the Debian mirror in /etc/apt"
  echo "$uri"
}

rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
[ -x "$cargo_bin/cargo" ] || fail "finding the Rust toolchain ($cargo_bin/cargo)"

step "debootstrap --variant=minbase bookworm into $root"
command -v debootstrap >/dev/null || fail "debootstrap is not installed (scripts/install-test-deps.sh installs it)"
debootstrap --variant=minbase bookworm "$root" "$(mirror)" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap (log: $work/debootstrap.log)"; }

step "copying the repository (no ../shared beside it)"
mkdir -p "$root/src/kiln" "$root/root/.rustup" "$root/root/.cargo/bin"
tar -C "$repo" --exclude=./target --exclude=./.git -cf - . | tar -C "$root/src/kiln" -xf -
# What this machine's network needs, as a machine with rustup has it:
# its resolver, and its CA bundle (rustup comes with curl and
# ca-certificates; the bundle may hold a proxy's CA that a stock one lacks).
# The local CAs go where update-ca-certificates finds them too, since a
# package that pulls in ca-certificates rebuilds the bundle.
cp /etc/resolv.conf "$root/etc/resolv.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi

# Inside: a private mount and pid namespace, the tree as its root, the
# toolchain read-only, a fresh /proc, the host's /dev and /sys (cgroups).
cat >"$root/fresh-check-inside.sh" <<'INSIDE'
set -euo pipefail
export HOME=/root PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export CARGO_HOME=/root/.cargo RUSTUP_HOME=/root/.rustup
cd /src/kiln
step() { printf '\n== fresh-check: %s\n' "$1"; }
step "README command 1: scripts/demo.sh"
scripts/demo.sh || { echo "fresh-check FAILED at: scripts/demo.sh" >&2; exit 1; }
step "README command 1 again: the second build must be all CACHED"
out=$(scripts/demo.sh 2>&1) || { echo "$out" >&2; echo "fresh-check FAILED at: second scripts/demo.sh" >&2; exit 1; }
echo "$out" | sed -n '/== second build/,$p' >/tmp/second
# Each build ends with "built in T: N steps run, M cached ...": N must be 0.
summaries=$(grep -E '^built in .*steps run' /tmp/second || true)
if [ "$(echo "$summaries" | grep -c .)" -ne 2 ] || echo "$summaries" | grep -qv ': 0 steps run,'; then
  cat /tmp/second >&2; echo "fresh-check FAILED at: the second demo build was not all CACHED" >&2; exit 1
fi
step "README command 2: scripts/test.sh"
scripts/test.sh || { echo "fresh-check FAILED at: scripts/test.sh" >&2; exit 1; }
INSIDE

step "running the README's commands inside"
unshare --mount --pid --fork --propagation private -- bash -euc '
  root=$1 rustup_home=$2 cargo_bin=$3
  mount --bind "$root" "$root"
  mount --bind "$rustup_home" "$root/root/.rustup"
  mount -o remount,bind,ro "$root/root/.rustup"
  mount --bind "$cargo_bin" "$root/root/.cargo/bin"
  mount -o remount,bind,ro "$root/root/.cargo/bin"
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount --rbind /sys "$root/sys"
  mount -t tmpfs tmpfs "$root/tmp"
  mkdir -p "$root/.old-root"
  cd "$root"
  pivot_root . .old-root
  umount -l /.old-root
  rmdir /.old-root
  exec env -i TERM=dumb bash /fresh-check-inside.sh
' fresh-check "$root" "$rustup_home" "$cargo_bin" || fail "inside the fresh root (see above)"

step "passed"
echo "fresh-check passed in $((SECONDS - started)) s ($work)"
if [ $# -eq 0 ]; then rm -rf "$work"; fi
