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
# ComfyUI's own example clients run unchanged against `diffgraph serve`
# (host/tests/serve_examples.rs): websocket-client from PyPI, and the scripts
# from ComfyUI's repository at a pinned commit, checked by SHA-256. They are
# GPL-3.0, so they are fetched into .venv rather than committed here. Failing
# to fetch is not fatal (offline): that test then says it was skipped.
if ! .venv/bin/python -c 'import websocket' 2>/dev/null; then
  echo "setup: installing websocket-client into .venv" >&2
  .venv/bin/python -m pip install --quiet "websocket-client==1.9.2"
fi
# A ComfyUI client library from PyPI (with requests and websockets), driven
# by host/tests/serve_clients/ against `diffgraph serve`.
if ! .venv/bin/python -c 'import comfy_api_simplified' 2>/dev/null; then
  echo "setup: installing comfy-api-simplified into .venv" >&2
  .venv/bin/python -m pip install --quiet "comfy-api-simplified==1.6.0" "websockets==17.4" "requests==2.34.2"
fi
COMFYUI_COMMIT="a125cd84b054a57729b5eecab930ca9408719832"
examples=".venv/comfyui-script-examples"
.venv/bin/python - "$COMFYUI_COMMIT" "$examples" <<'PYEOF' || echo "setup: warning: could not fetch ComfyUI's script_examples (offline?)" >&2
import hashlib, pathlib, sys, urllib.request
commit, folder = sys.argv[1], pathlib.Path(sys.argv[2])
files = {
    "basic_api_example.py": "8bf77cd877f989445ca317efab08ae72c36071a2839bf1f0fc992e5907b005ec",
    "websockets_api_example.py": "4a72a56f184092ee828b120e7920162f0499bfe11510d881d8df7fc2506e3532",
}
folder.mkdir(parents=True, exist_ok=True)
for name, sha in files.items():
    path = folder / name
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha:
        continue
    url = f"https://raw.githubusercontent.com/Comfy-Org/ComfyUI/{commit}/script_examples/{name}"
    data = urllib.request.urlopen(url, timeout=30).read()
    if hashlib.sha256(data).hexdigest() != sha:
        sys.exit(f"{url}: unexpected content")
    path.write_bytes(data)
    print(f"setup: fetched {url}", file=sys.stderr)
PYEOF

# Python tools for the fixture script (diffusers/transformers) are only needed to
# regenerate committed fixtures; they are installed on demand by that script.
echo "setup: libtorch at $root/.venv/libtorch/lib" >&2
