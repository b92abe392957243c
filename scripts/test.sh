#!/usr/bin/env bash
# One command from a fresh clone: sets up what is missing, builds the
# workspace (the tests load the plugin libraries it produces) and runs every
# test. Extra arguments go to `cargo test`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./scripts/setup.sh
cargo build --release --workspace
cargo test --release --workspace "$@"
