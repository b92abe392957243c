#!/usr/bin/env bash
# Loading an SD1.5-size single-file checkpoint (random weights, fp16 as stored),
# diffgraph vs diffusers in one run: load time and the process's peak RSS (load
# plus one 64x64, 1-step generation in fp32 on both sides).
# Usage: scripts/bench/load.sh PYTHON [DIR]   PYTHON: an interpreter with diffusers
# (and torch); DIR (default /tmp/diffgraph-load-bench) holds the ~2 GiB checkpoint,
# made on first use and never committed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py=$1; dir=${2:-/tmp/diffgraph-load-bench}
export BENCH_THREADS="${BENCH_THREADS:-2}"
[ -f "$dir/sd15-random.safetensors" ] || "$py" scripts/bench/load_single_file.py make "$dir"
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f "%M" -o "$out/rss" target/release/diffgraph run graphs/txt2img_sd1.json --quiet --profile \
  --threads "$BENCH_THREADS" --out "$out" --set "ckpt.path=$dir/sd15-random.safetensors" \
  --set size.width=64 --set size.height=64 --set scheduler.steps=1 --set guidance.value=1.0 \
  >/dev/null 2>"$out/profile"
ours_load=$(awk '$1=="ckpt" {printf "%.2f s", $3/1000}' "$out/profile")  # --profile: node calls total_ms per_call_ms
ours_rss=$(python3 -c "print(round($(cat "$out/rss")/1024))")
theirs=$("$py" scripts/bench/load_single_file.py diffusers "$dir" 2>/dev/null | tail -1)
echo "diffgraph: load $ours_load, peak RSS $ours_rss MiB"
echo "diffusers: $theirs"
echo "checkpoint: $(du -m "$dir/sd15-random.safetensors" | cut -f1) MiB"
