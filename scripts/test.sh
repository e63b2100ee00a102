#!/usr/bin/env bash
# The README's test command: installs test dependencies, then runs the
# format check, clippy with warnings as errors, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
scripts/crash-race.sh 10
