#!/usr/bin/env bash
# Aten ops per U-Net call, diffgraph and diffusers side by side (BENCHMARKS.md,
# "Aten ops per U-Net call"). Both sides are counted by the same
# RecordFunction counter (scripts/bench/opcount.cpp, compiled here against the
# project's libtorch); diffusers is also counted with torch.profiler.
#  diffgraph: the unet_step bench in op-count mode, with the counter preloaded;
#             one call's ops = (ops of a run with 3 calls - ops with 1 call) / 2
#             (model creation and set-up cancel out).
#  diffusers: unet_ops.py, one call after a warm-up, counted in-process.
# Models: the tiny SD1 fixture U-Net (8x8 latent) and an SD1.5-size U-Net with
# random weights (8x8 latent: the op count does not depend on the size).
# PYTHON: a Python with diffusers on the project's torch (default
# .venv-fixtures/bin/python). MODELS="tiny sd15" (default both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PYTHON:-.venv-fixtures/bin/python}
export BENCH_THREADS="${BENCH_THREADS:-1}"
torch_dir=$(readlink -f .venv)/lib/python3.11/site-packages/torch
[ -d "$torch_dir" ] || torch_dir=$(readlink -f "$(dirname "$(find .venv/lib -maxdepth 3 -name torch -type d | head -1)")/torch")
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
g++ -O1 -std=c++17 -shared -fPIC -I"$torch_dir/include" "scripts/bench/opcount.cpp" \
  -L"$torch_dir/lib" -ltorch_cpu -lc10 -Wl,-rpath,"$torch_dir/lib" -o "$out/opcount.so"
cargo bench --quiet -p diffgraph-nodes-sd --bench unet_step --no-run 2>/dev/null
bench=$(ls -t target/release/deps/unet_step-* | grep -v '\.d$' | head -1)

for model in ${MODELS:-tiny sd15}; do
  case $model in
    tiny) ours_args=(--folder tests/fixtures/sd/sd1-tiny/unet); theirs_args=(--folder tests/fixtures/sd/sd1-tiny/unet) ;;
    sd15) ours_args=(); theirs_args=(--sd15) ;;
  esac
  for n in 1 3; do
    OPCOUNT_OUT="$out/ours$n.json" LD_PRELOAD="$out/opcount.so" "$bench" fp32 --calls $n --latent 8 "${ours_args[@]}"
  done
  "$PY" scripts/bench/unet_ops.py "$out/opcount.so" --latent 8 "${theirs_args[@]}" 2>/dev/null | tail -1 >"$out/theirs.json"
  python3 - "$model" "$out" <<'PYEOF'
import json, sys
model, out = sys.argv[1], sys.argv[2]
o1, o3 = (json.load(open(f"{out}/ours{n}.json")) for n in (1, 3))
ours = {k: {op: (o3[k].get(op, 0) - o1[k].get(op, 0)) // 2 for op in o3[k]} for k in ("top", "all")}
t = json.load(open(f"{out}/theirs.json"))
print(f"\n### {model}: aten ops per U-Net call (fp32, batch 2)\n")
print("| | diffgraph | diffusers (counter) | diffusers (torch.profiler) |")
print("|---|---|---|---|")
for k, label in (("top", "top-level ops"), ("all", "all dispatched ops")):
    print(f"| {label} | {sum(ours[k].values())} | {sum(t['counter'][k].values())} | {sum(t['profiler'][k].values())} |")
print("\n| top-level op | diffgraph | diffusers |")
print("|---|---|---|")
names = set(ours["top"]) | set(t["counter"]["top"])
for op in sorted(names, key=lambda n: (-max(ours["top"].get(n, 0), t["counter"]["top"].get(n, 0)), n)):
    a, b = ours["top"].get(op, 0), t["counter"]["top"].get(op, 0)
    if a or b:
        print(f"| {op} | {a} | {b} |")
PYEOF
done
