#!/usr/bin/env bash
# One command from a fresh clone: sets up what is missing (libtorch in .venv),
# builds diffgraph and its plugins, runs the default demo graph and prints the
# path of the PNG it wrote. Extra arguments go to `diffgraph run`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./scripts/setup.sh
echo "demo: building (release; the first build compiles libtorch's C++ shim, ~5 min)" >&2
cargo build --release --workspace --quiet
exec ./target/release/diffgraph run graphs/demo.json --out output "$@"
