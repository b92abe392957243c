#!/usr/bin/env bash
# One guided step (batch 2, 128x128 latent = 1024x1024 pixels) of an SDXL-size
# U-Net with random weights, fp32 and bf16, diffgraph and diffusers in one run,
# one process per side and dtype (peak RSS each), BENCH_THREADS threads
# (default 2). Needs a Python with torch and diffusers: PYTHON (default
# .venv-fixtures/bin/python). Memory: about 10 GB per fp32 process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export BENCH_THREADS="${BENCH_THREADS:-2}"
export OMP_NUM_THREADS="$BENCH_THREADS"
PY="${PYTHON:-.venv-fixtures/bin/python}"
cargo test --release -p diffgraph-nodes-sd --test unet_bench --no-run --quiet 2>/dev/null
echo "threads: $BENCH_THREADS; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for kind in fp32 bf16; do
  BENCH_KIND=$kind cargo test --release --quiet -p diffgraph-nodes-sd --test unet_bench -- --ignored --nocapture --exact sdxl_unet_step 2>/dev/null | grep '^{'
  "$PY" scripts/bench/sdxl_unet.py "$kind" 2>/dev/null
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
