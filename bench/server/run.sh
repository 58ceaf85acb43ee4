#!/usr/bin/env bash
# `gantry serve` figures (issue 10): webhook to first job started (p50/p99),
# jobs dispatched per second to 4 runners (runner-protocol clients that
# report success at once, so the queue is what is measured; each keeps its
# connection alive, as gantry runner and gitlab-runner do), one pipeline of
# 1,000 jobs end to end, log ingestion MB/s, and the server's RSS idle and
# after the load. No GitLab instance can run here, so the ratios are against
# the issue's targets (p50 < 100 ms, >= 500 jobs/s, idle < 50 MB); GitLab's
# own target is 1 s for 90% of jobs. With --baseline BIN the same run
# measures an older binary too and prints the ratios between them.
#
# Usage: bench/server/run.sh [--gantry BIN] [--baseline BIN] [--database postgres://…]
# Default BIN: target/release/gantry, built when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
GANTRY=""
BASELINE=""
DATABASE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gantry) GANTRY="$2"; shift 2 ;;
    --baseline) BASELINE="$2"; shift 2 ;;
    --database) DATABASE="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$GANTRY" ]; then
  GANTRY="$ROOT/target/release/gantry"
  [ -x "$GANTRY" ] || (cd "$ROOT" && cargo build --release -q -p gantry)
fi
for bin in "$GANTRY" $BASELINE; do
  [ -x "$bin" ] || { echo "bench/server: $bin is not an executable gantry binary" >&2; exit 2; }
done
out="$(mktemp)"
trap 'rm -f "$out" "$out.base"' EXIT
echo "== $GANTRY"
python3 "$ROOT/bench/server/bench.py" "$GANTRY" "$DATABASE" | tee "$out"
if [ -n "$BASELINE" ]; then
  echo "== baseline $BASELINE"
  python3 "$ROOT/bench/server/bench.py" "$BASELINE" "$DATABASE" | tee "$out.base"
  python3 - "$out" "$out.base" <<'PY'
import sys
def result(path):
    line = [l for l in open(path) if l.startswith("RESULT ")][-1]
    return {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
new, old = result(sys.argv[1]), result(sys.argv[2])
print("== ratios (baseline / this binary; > 1 means this one is better)")
print(f"one 1,000-job pipeline: {old['big_pipeline_s']:.1f} s -> {new['big_pipeline_s']:.1f} s: {old['big_pipeline_s'] / max(new['big_pipeline_s'], 0.001):.1f}x faster")
print(f"dispatch to 4 runners: {old['dispatch_per_s']:.0f}/s -> {new['dispatch_per_s']:.0f}/s: {new['dispatch_per_s'] / max(old['dispatch_per_s'], 1):.2f}x")
print(f"webhook -> first job p50: {old['p50_ms']:.1f} ms -> {new['p50_ms']:.1f} ms: {old['p50_ms'] / max(new['p50_ms'], 0.001):.2f}x")
PY
fi
