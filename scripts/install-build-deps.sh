#!/usr/bin/env bash
# Installs what building kiln and its demo need on a fresh Debian 12 machine
# with the Rust toolchain (rustup): a C compiler and libc headers (the
# compression and TLS crates build C code; rustc links through cc) and
# busybox-static (the offline base image, scripts/busybox-rootfs.sh).
# Safe to run again; installs only what is missing. Needs root.
set -euo pipefail

packages=(gcc libc6-dev busybox-static)
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
