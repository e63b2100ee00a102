#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine with
# the Rust toolchain (rustup) present. Safe to run again.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

# What building needs (a C compiler, busybox-static for the base image).
"$here/scripts/install-build-deps.sh"

# Debian packages the tests use: skopeo and umoci read what kiln-store
# writes; git is what ADD of a repository runs (and the tests make
# repositories with it); tmux gives the progress test a real terminal to
# capture; debootstrap makes the bare Debian root of scripts/fresh-check.sh;
# gcc and libc6-dev (its libc.a, from install-build-deps.sh) build the
# static probe of threat_container_escape.rs (keyctl, personality...), which
# runs some tests under util-linux's unshare; docker.io (Docker 20.10 with
# BuildKit) is the reference the differential suite builds every case of
# testdata/differential/ with (scripts/start-dockerd.sh starts a private
# daemon; the package's own service is not used); docker-registry (the
# CNCF distribution registry) is what the registry tests push to and pull
# from, each started by the test on a free 127.0.0.1 port with its own
# config, apache2-utils' htpasswd writes its Basic-auth users and openssl
# the CA and certificate of the TLS one; chromium renders the SVG plot of
# `kiln bench cache --plot` headless (in a network namespace of its own)
# for the bench test to look at; python3 and python3-venv run the Docker
# SDK for Python's suite against kiln serve (scripts/docker-py/run.sh
# installs the SDK and pytest from PyPI into a venv of its own). Later
# subsystems add theirs here.
APT_PACKAGES=(skopeo umoci git tmux debootstrap util-linux docker.io docker-registry apache2-utils openssl chromium python3 python3-venv)

if ((${#APT_PACKAGES[@]})); then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    apt-get update -qq
    # No package's service is started by the install: the packaged
    # docker-registry would listen on every interface, and the tests start
    # their own daemons. policy-rc.d is Debian's switch for that.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      trap 'rm -f "$policy"' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

# fmt and clippy gate CI.
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

# The conformance data lives beside the repository, never inside it. A
# clone without it still runs every other test; scripts/test.sh says which
# suites skip, and CI (CI set) fails them instead.
