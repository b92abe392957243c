#!/usr/bin/env bash
# Reproduces models/shapes-ldm/, models/shapes-ldm-classifier.pt and
# models/eval/ from seeds, on the CPU (one thread per process; about an hour
# of wall time on the project's 2-core machine, see the README section "The
# embedded demo model"). Every stage checkpoints and resumes; intermediate
# files go to target/shapes-train/ (SHAPES_WORK). Logs: target/shapes-train/*.log.
#
#   nohup scripts/train/train_all.sh > target/train_all.log 2>&1 &
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root/scripts/train"
py="$root/.venv-fixtures/bin/python"
# The evaluator needs no model: it trains on the second core meanwhile.
"$py" evaluator.py > /dev/null &
eval_pid=$!
"$py" train_vae.py
"$py" encode_latents.py
# second core: the latent classifier, then more decoder training (frozen encoder)
("$py" train_latent_classifier.py && "$py" train_vae_decoder.py) &
cls_pid=$!
"$py" train_ldm.py
wait "$cls_pid" "$eval_pid"
"$py" export_model.py
