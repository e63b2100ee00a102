#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine with
# the Rust toolchain (rustup) present. Safe to run again.
set -euo pipefail

# Debian packages the tests use: skopeo and umoci read what kiln-store
# writes; busybox-static is the root filesystem of the test base image
# (../shared/bench/busybox-rootfs.sh); git is what ADD of a repository
# runs (and the tests make repositories with it); tmux gives the progress
# test a real terminal to capture; gcc and libc6-dev (its libc.a) build
# the static probe of threat_container_escape.rs (keyctl, personality...),
# which runs some tests under util-linux's unshare. Later subsystems add
# theirs here.
APT_PACKAGES=(skopeo umoci busybox-static git tmux gcc libc6-dev util-linux)

if ((${#APT_PACKAGES[@]})); then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

# fmt and clippy gate CI.
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

# The conformance data lives beside the repository, never inside it.
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -d "$here/../shared/conformance" ]; then
  echo "error: $here/../shared/conformance not found: the tests read it from there" >&2
  exit 1
fi
