#!/usr/bin/env bash
# GPU benchmark, diffgraph vs diffusers in one run, for a machine lent with an
# accelerator. Builds nothing there: it runs the release binary and plugins
# carried from here (target/release/diffgraph and diffgraph-engine, libdiffgraph_nodes_*.so) against
# the device machine's libtorch, and diffusers installed offline from wheels
# carried in $WHEELS (default target/wheels, made here with
# `pip download diffusers transformers -d target/wheels --only-binary :all:`
# minus the torch/nvidia wheels; ~40 MiB, carry limit 64 MiB with the binaries).
#
#   scripts/bench/gpu.sh [--device cuda|cpu]
#
# Steps: (1) the CUDA-capable tests (prebuilt test binaries listed in
# $GPU_TESTS, if carried); (2) the demo on the device; (3) an SD1.5-size
# random-weight single-file checkpoint (made on the machine), txt2img at
# $SIZE x $SIZE (512), $STEPS (20) guided steps (guidance 7.5), fp16 and bf16,
# through diffgraph and diffusers: first-run latency (whole first process),
# it/s of the denoising loop, peak device memory.
# `--device cpu` runs the same path at SIZE=64 STEPS=2 fp32 (a syntax and flow
# check on a machine without a GPU; its numbers mean nothing).
#
# From the development machine (device tool), e.g.:
#   run(command="GPU_TESTS=target/release/deps/cli-HASH scripts/bench/gpu.sh",
#       carry=["target/release/diffgraph", "target/release/diffgraph-engine",
#              "target/release/libdiffgraph_nodes_core.so",
#              "target/release/libdiffgraph_nodes_sampling.so", "target/release/libdiffgraph_nodes_sd.so",
#              "target/release/libdiffgraph_nodes_guidance.so", "target/wheels", "target/release/deps/cli-HASH"])
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
device=cuda
[ "${1:-}" = "--device" ] && device=$2
torch_py=${TORCH_PY:-/opt/torch/.venv/bin/python}
[ -x "$torch_py" ] || torch_py=$(command -v python3)
if [ "$device" = cpu ]; then SIZE=${SIZE:-64}; STEPS=${STEPS:-2}; DTYPES=${DTYPES:-fp32}
else SIZE=${SIZE:-512}; STEPS=${STEPS:-20}; DTYPES=${DTYPES:-fp16 bf16}; fi
work=${WORK:-/tmp/diffgraph-gpu-bench}; mkdir -p "$work"
bin=target/release/diffgraph
# The carried binary's rpath points at this checkout's .venv; use the machine's libtorch.
torch_lib=$("$torch_py" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "# device $device; $("$torch_py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')")"
echo "# load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" info | head -20

# Peak device memory of a command: nvidia-smi polled every 100 ms (both sides
# measured the same way; includes the CUDA context).
peak_mem() { # peak_mem FILE -- CMD...
  local f=$1; shift 2; echo 0 > "$f"
  if [ "$device" = cuda ] && command -v nvidia-smi >/dev/null; then
    ( while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; sleep 0.1; done ) > "$f.log" &
    local poll=$! rc=0; "$@" || rc=$?; kill $poll; sort -n "$f.log" | tail -1 > "$f"; return $rc
  fi
  "$@"
}

echo "## (1) CUDA-capable tests"
for t in ${GPU_TESTS:-}; do "$t" --test-threads 1 cuda || echo "FAILED: $t"; done
[ -n "${GPU_TESTS:-}" ] || echo "(no test binaries carried: GPU_TESTS unset)"

echo "## (2) the demo on $device"
s=$(date +%s.%N); "$bin" run graphs/demo.json --device "$device" --quiet --out "$work/out"
echo "demo end to end: $(python3 -c "print(f'{$(date +%s.%N)-$s:.2f} s')")"

echo "## (3) SD1.5-size txt2img ${SIZE}x${SIZE}, $STEPS guided steps"
# diffusers next to the machine's torch: $DIFFUSERS_PY if given (an interpreter
# that has both), else the carried wheels installed offline into $work/pylib.
py=${DIFFUSERS_PY:-$torch_py}
if [ -z "${DIFFUSERS_PY:-}" ]; then
  [ -d "$work/pylib/diffusers" ] || "$torch_py" -m pip install --quiet --no-index \
    --find-links "${WHEELS:-target/wheels}" --target "$work/pylib" diffusers transformers
  export PYTHONPATH="$work/pylib${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -f "$work/sd15-random.safetensors" ] || "$py" scripts/bench/load_single_file.py make "$work"
printf "%-6s %-10s %12s %10s %14s\n" dtype side first_run_s it_per_s peak_mem_mib
for dt in $DTYPES; do
  s=$(date +%s.%N)
  peak_mem "$work/mem" -- "$bin" run graphs/txt2img_sd1.json --device "$device" --quiet --profile --out "$work/out" \
    --set "ckpt.path=$work/sd15-random.safetensors" --set "ckpt.dtype=$dt" --set size.width="$SIZE" \
    --set size.height="$SIZE" --set scheduler.steps="$STEPS" >/dev/null 2>"$work/profile"
  first=$(python3 -c "print(f'{$(date +%s.%N)-$s:.2f}')")
  loop_ms=$(awk '$1=="denoise" {print $3}' "$work/profile")  # --profile: node calls total_ms per_call_ms
  ips=$(python3 -c "print(f'{$STEPS*1000/float(\"${loop_ms:-nan}\"):.2f}')")
  printf "%-6s %-10s %12s %10s %14s\n" "$dt" diffgraph "$first" "$ips" "$(cat "$work/mem")"
  peak_mem "$work/mem" -- "$py" scripts/bench/gpu_diffusers.py "$work" "$device" "$dt" "$SIZE" "$STEPS" \
    > "$work/theirs" 2>"$work/theirs.err" || { tail -20 "$work/theirs.err"; exit 1; }
  read -r first ips < <(tail -1 "$work/theirs")
  printf "%-6s %-10s %12s %10s %14s\n" "$dt" diffusers "$first" "$ips" "$(cat "$work/mem")"
done
