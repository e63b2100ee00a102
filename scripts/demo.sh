#!/usr/bin/env bash
# The README's first command, after `cargo build --release`: makes a busybox
# base image from Debian's busybox-static (no container registry needed),
# builds examples/hello (a RUN step in a container) and examples/static with
# kiln, shows the images and runs one. The store is $KILN_ROOT, default
# ./target/demo-store. Building needs root (RUN uses namespaces and overlayfs).
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=./target/release/kiln
export KILN_ROOT=${KILN_ROOT:-$PWD/target/demo-store}
rootfs=target/busybox-rootfs.tar
sh ../shared/bench/busybox-rootfs.sh "$rootfs" >/dev/null
"$kiln" import "$rootfs" busybox:latest >/dev/null
"$kiln" build -t hello:latest examples/hello
"$kiln" build -t static:latest examples/static
"$kiln" images
"$kiln" run --rm hello:latest
echo "inspect it with: skopeo inspect oci:$KILN_ROOT:static:latest"
