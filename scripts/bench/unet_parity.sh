#!/usr/bin/env bash
# SD1.5-size U-Net parity with diffusers on the same random weights (fp32),
# the check for the convolution kernels only large models take
# (nodes/sd/src/conv.rs). Writes a 3.4 GB diffusers folder to a temporary
# directory (removed at exit). PYTHON: a Python with diffusers (default
# .venv-fixtures/bin/python); LATENT (default 32).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PYTHON:-.venv-fixtures/bin/python}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
"$PY" scripts/bench/unet_parity.py "$out" "${LATENT:-32}" 2>/dev/null
BENCH_THREADS=${BENCH_THREADS:-2} cargo bench --quiet -p diffgraph-nodes-sd --bench unet_step -- \
  fp32 --folder "$out/unet" --parity "$out/io.safetensors" 2>/dev/null | tail -1
