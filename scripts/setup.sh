#!/usr/bin/env bash
# Sets up everything diffgraph needs to build, idempotently:
#   .venv/  a project-local Python venv holding the PyPI wheel torch==2.11.0,
#           whose lib/ folder is the libtorch that tch 0.24 links against.
# Re-running is cheap: each step is skipped when its result is present.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1; }

TORCH_VERSION="2.11.0"
PY="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi

have_torch() {
  .venv/bin/python - "$TORCH_VERSION" <<'PYEOF' 2>/dev/null
import sys, importlib.metadata as m
sys.exit(0 if m.version("torch") == sys.argv[1] else 1)
PYEOF
}

if ! have_torch; then
  echo "setup: installing torch==$TORCH_VERSION into .venv (large download, once)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==$TORCH_VERSION" numpy
fi

# A stable path for torch-sys (.cargo/config.toml points LIBTORCH here) and for the
# relative rpath baked into every binary and plugin, whatever the Python version.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn "$(python3 -c "import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))" "$site/torch" "$root/.venv")" .venv/libtorch

# Debian's redis-server for the scale-out tests (skipped when present).
./scripts/setup-redis.sh || echo "setup: warning: the scale-out tests (host/tests/scale_out*.rs) need redis-server" >&2

# Python tools for the fixture script (diffusers/transformers) are only needed to
# regenerate committed fixtures; they are installed on demand by that script.
echo "setup: libtorch at $root/.venv/libtorch/lib" >&2
