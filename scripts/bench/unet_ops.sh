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
# The tables also give each top-level op's milliseconds per call (wall time,
# summed by name; diffgraph's own Rust kernels run outside aten ops and are
# not in them): meaningful with LATENT=64 MODELS=sd15 (SD1.5 at 512x512, a
# call of seconds); a tiny call's milliseconds are within the runs' noise.
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

latent=${LATENT:-8}
for model in ${MODELS:-tiny sd15}; do
  case $model in
    tiny) ours_args=(--folder tests/fixtures/sd/sd1-tiny/unet); theirs_args=(--folder tests/fixtures/sd/sd1-tiny/unet) ;;
    sd15) ours_args=(); theirs_args=(--sd15) ;;
  esac
  for n in 1 3; do
    OPCOUNT_OUT="$out/ours$n.json" LD_PRELOAD="$out/opcount.so" "$bench" fp32 --calls $n --latent "$latent" "${ours_args[@]}"
  done
  "$PY" scripts/bench/unet_ops.py "$out/opcount.so" --latent "$latent" "${theirs_args[@]}" 2>/dev/null | tail -1 >"$out/theirs.json"
  python3 - "$model" "$out" "$latent" <<'PYEOF'
import json, sys
model, out = sys.argv[1], sys.argv[2]
o1, o3 = (json.load(open(f"{out}/ours{n}.json")) for n in (1, 3))
ours = {k: {op: (o3[k].get(op, 0) - o1[k].get(op, 0)) // 2 for op in o3[k]} for k in ("top", "all")}
# An op that model creation also dispatches (zeros, normal_...) has no
# per-call time by subtraction: creation's share varies between the runs.
in_creation = {op for op, n in o1["top"].items() if n > ours["top"].get(op, 0) > 0}
ms = {op: (o3["top_seconds"][op] - o1["top_seconds"].get(op, 0)) / 2 * 1e3
      for op in o3["top_seconds"] if op not in in_creation and ours["top"].get(op, 0) > 0}
t = json.load(open(f"{out}/theirs.json"))
their_ms = {op: v * 1e3 for op, v in t["counter"]["top_seconds"].items()}
latent = int(sys.argv[3])
print(f"\n### {model}: aten ops per U-Net call (fp32, batch 2, {latent}x{latent} latent)\n")
print("| | diffgraph | diffusers (counter) | diffusers (torch.profiler) |")
print("|---|---|---|---|")
for k, label in (("top", "top-level ops"), ("all", "all dispatched ops")):
    print(f"| {label} | {sum(ours[k].values())} | {sum(t['counter'][k].values())} | {sum(t['profiler'][k].values())} |")
mine = lambda op: "-" if op in in_creation else f"{ms.get(op, 0):.1f}"
print(f"| top-level ops' time, ms (diffgraph's without those marked -) | {sum(ms.values()):.1f} | {sum(their_ms.values()):.1f} | |")
print("\n| top-level op | diffgraph | diffusers | diffgraph, ms | diffusers, ms |")
print("|---|---|---|---|---|")
names = set(ours["top"]) | set(t["counter"]["top"])
for op in sorted(names, key=lambda n: (-max(ours["top"].get(n, 0), t["counter"]["top"].get(n, 0)), n)):
    a, b = ours["top"].get(op, 0), t["counter"]["top"].get(op, 0)
    if a or b:
        print(f"| {op} | {a} | {b} | {mine(op)} | {their_ms.get(op, 0):.1f} |")
print("\n(-: diffgraph's model creation dispatches the op too, so its per-call time is not known by subtraction.)")
PYEOF
done
