#!/bin/sh
# Writes kiln's offline base image: a busybox root filesystem as a plain tar
# (default target/busybox-rootfs.tar), made from Debian's busybox-static with
# nothing but the Debian mirror apt already uses. The output depends only on
# the busybox binary: names sorted, times 0, owners 0:0, modes fixed, so the
# same package version always gives the same bytes and `kiln import` the
# same image digest (which is what lets a second build hit the cache).
#   scripts/busybox-rootfs.sh [OUT.tar]   then   kiln import OUT.tar busybox
set -eu
out=${1:-target/busybox-rootfs.tar}

if ! dpkg -s busybox-static >/dev/null 2>&1; then
  echo "installing Debian's busybox-static (needs root)" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null 2>&1
fi
busybox=/bin/busybox

umask 022
tree=$(mktemp -d)
partial=
trap 'rm -rf "$tree" $partial' EXIT
chmod 0755 "$tree"

for dir in bin etc root proc sys dev tmp var/tmp; do
  mkdir -p "$tree/$dir"
done
chmod 0700 "$tree/root"
chmod 1777 "$tree/tmp" "$tree/var/tmp"
cp "$busybox" "$tree/bin/busybox"
chmod 0755 "$tree/bin/busybox"
# One link per applet the binary says it has (busybox itself excluded).
"$busybox" --list | while read -r applet; do
  [ "$applet" = busybox ] || ln -s busybox "$tree/bin/$applet"
done
cat >"$tree/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$tree/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP

mkdir -p "$(dirname "$out")"
# An unpredictable temp name beside the output (no planted link is written
# through), renamed into place whole.
partial=$(mktemp "$(dirname "$out")/.busybox-rootfs.XXXXXX")
tar --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  -C "$tree" -cf "$partial" .
chmod 0644 "$partial"
mv "$partial" "$out"
partial=
echo "$out"
