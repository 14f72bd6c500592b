#!/usr/bin/env bash
# The test command (README): install the test peers, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
export PEERS_VENV="$PWD/target/peers-venv"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked --no-fail-fast "$@"
