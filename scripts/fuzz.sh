#!/usr/bin/env bash
# Structural fuzzing of the graph parser, validator and planner for a bounded
# time (stable Rust: proptest-driven mutations of the seed corpus in
# host/tests/fuzz_corpus/ and graphs/; see host/tests/fuzz_graphs.rs).
#   scripts/fuzz.sh [SECONDS]   (default 600), niced so that it yields the CPU.
# A failure prints the (shrunk) case; add it to host/tests/fuzz_corpus/ as
# regression_<n>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
cargo build --release --workspace --quiet
FUZZ_SECONDS="$seconds" FUZZ_CASES="${FUZZ_CASES:-2000}" nice -n 10 \
  cargo test --release -p diffgraph --test fuzz_graphs mutated_graphs_never_panic -- --nocapture
