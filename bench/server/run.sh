#!/usr/bin/env bash
# `gantry serve` figures (issue 10): webhook to first job started (p50/p99),
# jobs dispatched per second to 4 runners (runner-protocol clients that
# report success at once, so the queue is what is measured), log ingestion
# MB/s, and the server's RSS idle and after the load. No GitLab instance can
# run here, so the ratios are against the issue's targets (p50 < 100 ms,
# >= 500 jobs/s, idle < 50 MB); GitLab's own target is 1 s for 90% of jobs.
#
# Usage: bench/server/run.sh [--gantry BIN] [--database postgres://…]
# Default BIN: target/release/gantry, built when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
GANTRY=""
DATABASE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gantry) GANTRY="$2"; shift 2 ;;
    --database) DATABASE="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$GANTRY" ]; then
  GANTRY="$ROOT/target/release/gantry"
  [ -x "$GANTRY" ] || (cd "$ROOT" && cargo build --release -q -p gantry)
fi
exec python3 "$ROOT/bench/server/bench.py" "$GANTRY" "$DATABASE"
