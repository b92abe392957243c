#!/usr/bin/env bash
# Stable Diffusion benchmarks, diffgraph and diffusers side by side in one run,
# same model, same input, same thread count (BENCH_THREADS, default 2):
#  (a) the tiny SD1 model, txt2img end to end (whole process: start, load,
#      generate, write the PNG) and generation alone (model loaded);
#  (b) one guided U-Net step of an SD1.5-size U-Net, random weights, fp32 and bf16.
# BENCH_PARTS=a or b runs only (a) or (b); BENCH_STEPS timed U-Net steps in (b) (default 3);
# BENCH_DTYPES (default "fp32 bf16"); BENCH_CONV=alternate also times diffgraph's
# step with libtorch's own convolution kernels, alternated in the same process.
# Each side runs as its users get it: diffgraph's in-process benches with the
# environment the `diffgraph` launcher gives its engine (passive OpenMP
# waiting, glibc malloc's tunables: host/src/engine_env.rs; read from
# `diffgraph info`, so a variable the user set is kept as the launcher keeps
# it), diffusers with PyTorch's and glibc's defaults; THEIR_WAIT_POLICY=passive
# gives diffusers passive waiting, THEIR_ENV=ours gives it the whole engine
# environment.
# Needs the fixture tools (scripts/fixtures/env.sh) for the diffusers side, or PYTHON=python-with-diffusers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export BENCH_THREADS="${BENCH_THREADS:-2}"
export OMP_NUM_THREADS="$BENCH_THREADS"
PY=${PYTHON:-.venv-fixtures/bin/python}
cargo build --release --workspace --quiet
cargo bench --quiet -p diffgraph --bench sd_txt2img --no-run 2>/dev/null || true
cargo bench --quiet -p diffgraph-nodes-sd --bench unet_step --no-run 2>/dev/null || true
now() { date +%s.%N; }
# What the launcher sets for its engine (NAME=value words; values have no spaces).
ENGINE_ENV=$(./target/release/diffgraph info --json 2>/dev/null | python3 -c \
  "import json,sys; e=json.load(sys.stdin)['environment']; print(' '.join(f'{k}={v}' for k,v in e.items() if v))")
echo "diffgraph's environment: $ENGINE_ENV"
THEIR_ENV_WORDS=()
[ "${THEIR_ENV:-}" = ours ] && read -ra THEIR_ENV_WORDS <<< "$ENGINE_ENV"
[ -n "${THEIR_WAIT_POLICY:-}" ] && THEIR_ENV_WORDS+=("OMP_WAIT_POLICY=$THEIR_WAIT_POLICY")
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

echo "threads: $BENCH_THREADS"
out=$(mktemp -d)
if [[ "${BENCH_PARTS:-ab}" == *a* ]]; then
t0=$(now); ./target/release/diffgraph run graphs/txt2img_sd1.json --quiet --out "$out" >/dev/null; t1=$(now)
ours_e2e=$(python3 -c "print($t1-$t0)")
cat > "$out/e2e.py" <<PYEOF
import torch; torch.set_num_threads($BENCH_THREADS)
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
p = StableDiffusionPipeline.from_pretrained("tests/fixtures/sd/sd1-tiny", torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
p.scheduler = EulerDiscreteScheduler.from_config(p.scheduler.config); p.set_progress_bar_config(disable=True)
p("a photograph of an astronaut riding a horse", negative_prompt="blurry, low quality", height=16, width=24, num_inference_steps=20,
  guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(42)).images[0].save("$out/diffusers.png")
PYEOF
t0=$(now); $PY "$out/e2e.py" 2>/dev/null; t1=$(now)
theirs_e2e=$(python3 -c "print($t1-$t0)")
# Generation alone: BENCH_REPEAT (default 3) process pairs, alternating sides
# (diffgraph in the launcher's environment, diffusers with PyTorch's default);
# each process reports the median of 5 generations; the table shows the median
# over the pairs of each side (load time and memory: the last pair).
ours_gen=(); theirs_gen=()
for _ in $(seq "${BENCH_REPEAT:-3}"); do
  ours=$(env $ENGINE_ENV cargo bench --quiet -p diffgraph --bench sd_txt2img 2>/dev/null | tail -1)
  theirs=$(env "${THEIR_ENV_WORDS[@]}" $PY scripts/bench/diffusers_sd.py txt2img tests/fixtures/sd/sd1-tiny 2>/dev/null | tail -1)
  ours_gen+=("$(field "$ours" generate_s)"); theirs_gen+=("$(field "$theirs" generate_s)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "generate_s per pair: diffgraph ${ours_gen[*]}; diffusers ${theirs_gen[*]}"
printf "\n(a) tiny SD1 txt2img, Euler 20 steps, guidance 7.5, 16x24\n"
printf "%-28s %12s %12s %8s\n" "" diffgraph diffusers ratio
printf "%-28s %12.3f %12.3f %8s\n" "end to end (process), s" "$ours_e2e" "$theirs_e2e" "$(ratio "$ours_e2e" "$theirs_e2e")"
a=$(median "${ours_gen[@]}"); b=$(median "${theirs_gen[@]}")
printf "%-28s %12.3f %12.3f %8s\n" "generate_s (median)" "$a" "$b" "$(ratio "$a" "$b")"
for k in load_s peak_rss_mib; do
  a=$(field "$ours" $k); b=$(field "$theirs" $k)
  printf "%-28s %12.3f %12.3f %8s\n" "$k" "$a" "$b" "$(ratio "$a" "$b")"
done
fi
[[ "${BENCH_PARTS:-ab}" == *b* ]] || { rm -rf "$out"; exit 0; }
printf "\n(b) one guided U-Net step, SD1.5-size, random weights, batch 2, 64x64\n"
printf "%-28s %12s %12s %8s\n" "" diffgraph diffusers ratio
for dt in ${BENCH_DTYPES:-fp32 bf16}; do
  ours=$(env $ENGINE_ENV cargo bench --quiet -p diffgraph-nodes-sd --bench unet_step -- $dt 2>/dev/null | tail -1)
  theirs=$(env "${THEIR_ENV_WORDS[@]}" $PY scripts/bench/diffusers_sd.py unet $dt 2>/dev/null | tail -1)
  for k in step_s peak_rss_mib; do
    a=$(field "$ours" $k); b=$(field "$theirs" $k)
    printf "%-28s %12.3f %12.3f %8s\n" "$dt $k" "$a" "$b" "$(ratio "$a" "$b")"
  done
  if [ "${BENCH_CONV:-}" = alternate ]; then
    a=$(field "$ours" step_libtorch_conv_s); b=$(field "$theirs" step_s)
    printf "%-28s %12.3f %12.3f %8s\n" "$dt step_s, libtorch conv" "$a" "$b" "$(ratio "$a" "$b")"
  fi
done
rm -rf "$out"
