#!/usr/bin/env bash
# Reproduces models/shapes-ldm/, models/shapes-ldm-classifier.pt and
# models/eval/ from seeds, on the CPU of the project's 2-core machine (about
# 70 min of wall time: the VAE 10, latents 2, the U-Net and text encoder 50,
# with the latent classifier and the decoder fine-tune beside them; see the
# README section "The embedded demo model").
# Every stage that runs longer than a few minutes checkpoints and resumes;
# intermediate files go to target/shapes-train/ (SHAPES_WORK), logs to
# target/shapes-train/*.log. Thread counts are part of the recipe (float
# reductions depend on them).
#
#   nohup scripts/train/train_all.sh > target/train_all.log 2>&1 &
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root/scripts/train"
py="$root/.venv-fixtures/bin/python"
# The evaluator needs no model: it trains on the second core meanwhile.
SHAPES_THREADS=1 "$py" evaluator.py > /dev/null &
eval_pid=$!
SHAPES_THREADS=1 "$py" train_vae.py
wait "$eval_pid"
SHAPES_THREADS=2 "$py" encode_latents.py
# The latent classifier and the decoder fine-tune share the machine with the LDM.
(SHAPES_THREADS=1 "$py" train_latent_classifier.py && SHAPES_THREADS=1 "$py" train_vae_decoder.py) &
side_pid=$!
SHAPES_THREADS=2 "$py" train_ldm.py
wait "$side_pid"
"$py" export_model.py
