#!/usr/bin/env bash
# Redis for the scale-out tests (host/tests/scale_out*.rs) and local use of
# `diffgraph serve --queue` / `diffgraph worker --queue`: Debian's
# redis-server (>= 6.2 for XAUTOCLAIM). The tests start their own server on a
# free loopback port; nothing here starts one. Idempotent: skipped when
# redis-server is on PATH. Installing needs root (or passwordless sudo).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: redis-server is missing and apt-get is not available; install Redis >= 6.2 for the scale-out tests" >&2
  exit 1
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "setup: redis-server is missing; installing it needs root: sudo apt-get install -y redis-server" >&2
    exit 1
  fi
fi
echo "setup: installing redis-server (Debian package) for the scale-out tests" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get install -y --no-install-recommends redis-server >/dev/null \
  || { "${as_root[@]}" apt-get update >/dev/null && "${as_root[@]}" apt-get install -y --no-install-recommends redis-server >/dev/null; }
command -v redis-server >/dev/null
