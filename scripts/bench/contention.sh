#!/usr/bin/env bash
# The demo (graphs/demo.json) at the default thread count, quiet and next to a
# CPU hog (one busy loop pinned to each core this process may use), for each
# binary given (e.g. a build from before a change), interleaved so that every configuration sees the same machine.
# Usage: scripts/bench/contention.sh [BIN...]   (default: target/release/diffgraph)
# BENCH_RUNS (default 3) runs per configuration; prints each run and the median.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bins=("$@"); [ ${#bins[@]} -gt 0 ] || bins=(target/release/diffgraph)
runs=${BENCH_RUNS:-3}
cores=$(python3 -c "import os; print(' '.join(map(str, sorted(os.sched_getaffinity(0)))))")
out=$(mktemp -d); hogs=()
cleanup() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$out"; }
trap cleanup EXIT
one() { # prints the wall time of one demo run with binary $1
  local s e; s=$(date +%s.%N)
  timeout 300 "$1" run graphs/demo.json --quiet --out "$out" >/dev/null
  e=$(date +%s.%N); python3 -c "print(f'{$e-$s:.2f}')"
}
declare -A times
for phase in quiet hog; do
  if [ "$phase" = hog ]; then
    for c in $cores; do taskset -c "$c" sh -c 'while :; do :; done' >/dev/null 2>&1 & hogs+=($!); done
    sleep 1
  fi
  for r in $(seq "$runs"); do
    for b in "${bins[@]}"; do
      k="$phase|$b"; t=$(one "$b"); times[$k]="${times[$k]:-} $t"; echo "$phase $b $t" >&2
    done
  done
  echo "# $phase done, load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
printf "%-6s %-38s %-28s %s\n" phase binary runs median
for k in "${!times[@]}"; do
  IFS='|' read -r phase b <<<"$k"
  med=$(python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" ${times[$k]})
  printf "%-6s %-38s %-28s %s\n" "$phase" "$b" "${times[$k]}" "$med"
done | sort
