#!/usr/bin/env bash
# The throughput half of latent diffusion's sampling-efficiency figure
# (Rombach et al. 2022): diffgraph's UNet2DModel at 64x64 output for
# f = 1, 2, 4, 8 (nodes/sd/benches/ldm_factor.rs), then the table and plot
# of docs/ldm_sampling_efficiency.md (scripts/bench/ldm_factor_plot.py, any
# Python with matplotlib: PYTHON=...).
# Usage: scripts/bench/ldm_factor.sh   (BENCH_THREADS=1 by default: on a
# busy machine one thread with a passive OpenMP wait is the stable choice)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=target/ldm_factor.jsonl
load=$(cut -d' ' -f1-3 /proc/loadavg)
BENCH_THREADS=${BENCH_THREADS:-1} OMP_WAIT_POLICY=passive \
  cargo bench -q -p diffgraph-nodes-sd --bench ldm_factor | grep '^{' > "$out"
cat "$out"
echo "load average before the run: $load"
"${PYTHON:-python3}" scripts/bench/ldm_factor_plot.py "$out" docs/img/ldm_sampling_efficiency.png
