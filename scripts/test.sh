#!/usr/bin/env bash
# The README's test command: installs test dependencies, then runs the
# format check, clippy with warnings as errors, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
if [ ! -d ../shared/conformance ] || [ ! -d ../shared/bench ]; then
  echo "note: ../shared (conformance data, benchmark projects) not found beside the" \
    "repository: the parser, shell-lexer, .dockerignore, real-world, seccomp and" \
    "benchmark-project suites are skipped (in CI they fail instead)" >&2
fi
# A private dockerd for the differential suite (crates/kiln-cli/tests/
# differential.rs), on a unix socket only, stopped however this script ends.
dockerd_dir=target/dockerd
trap 'scripts/start-dockerd.sh --stop "$dockerd_dir"' EXIT
dockerd_env=$(scripts/start-dockerd.sh "$dockerd_dir")
export "$dockerd_env"
# The tests reach registries on 127.0.0.1 only (each starts its own): a
# base an error case names but the store lacks is then refused at once,
# never looked up on Docker Hub.
export KILN_REGISTRY_ALLOW=127.0.0.1
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
scripts/crash-race.sh 10
# The Docker SDK for Python's own integration suite against kiln serve
# (the selection and the reasons for what is left out:
# scripts/docker-py/deselected.txt).
scripts/docker-py/run.sh
# CI also runs the README's two commands on a bare Debian root, so a
# forgotten install step fails here rather than on a new user's machine
# (a few minutes; by hand: scripts/fresh-check.sh).
if [ -n "${CI:-}" ]; then
  scripts/fresh-check.sh
fi
