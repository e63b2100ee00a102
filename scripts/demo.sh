#!/usr/bin/env bash
# The README's first command. On a fresh Debian 12 machine with Rust: installs
# what the build needs (scripts/install-build-deps.sh), builds kiln (release),
# makes the offline busybox base image from Debian's busybox-static, builds
# examples/hello (a RUN step in a container) and examples/static into the
# store $KILN_ROOT (default ./target/demo-store), runs hello, then builds both
# again to show the cache at work: same base bytes, every step CACHED.
# Needs root: RUN uses namespaces and overlayfs. Nothing outside the
# repository is read.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-build-deps.sh
cargo build --release --locked
kiln=./target/release/kiln
export KILN_ROOT=${KILN_ROOT:-$PWD/target/demo-store}

rootfs=$(scripts/busybox-rootfs.sh target/busybox-rootfs.tar)
# A fixed creation time: the same tarball is then the same image (digest),
# however often it is imported.
import_base() { SOURCE_DATE_EPOCH=0 "$kiln" import "$rootfs" busybox:latest >/dev/null; }
import_base

build_examples() {
  "$kiln" build --progress plain -t hello:latest examples/hello
  "$kiln" build --progress plain -t static:latest examples/static
}

echo "== first build"
build_examples
"$kiln" images
"$kiln" run --rm --network none hello:latest

echo "== second build: the base imported again from the same bytes, nothing changed, so every step is CACHED"
import_base
build_examples

echo "store: $KILN_ROOT (to hand an image to other tools: kiln save -o static.tar static)"
