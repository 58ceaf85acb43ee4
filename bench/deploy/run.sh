#!/usr/bin/env bash
# Benchmarks `gantry deploy ecs` against ecs-deploy on the same moto server.
#   bench/deploy/run.sh [RUNS]      (GANTRY=path/to/gantry to use a given binary)
# Installs moto + ecs-deploy into .venv-aws (scripts/setup-moto.sh) and builds gantry --release
# unless GANTRY is set. Results: stdout and bench/out/deploy.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$root/scripts/setup-moto.sh" >/dev/null
venv="${GANTRY_AWS_VENV:-$root/.venv-aws}"
if [[ -z "${GANTRY:-}" ]]; then
  (cd "$root" && cargo build --release -q -p gantry)
  GANTRY="${CARGO_TARGET_DIR:-$root/target}/release/gantry"
fi
state="$(mktemp -d)"
trap 'rm -rf "$state"' EXIT
GANTRY_STATE_DIR="$state" "$venv/bin/python" "$root/bench/deploy/bench.py" \
  --gantry "$GANTRY" --ecs "$venv/bin/ecs" --moto "$venv/bin/moto_server" \
  --runs "${1:-10}" --out "$root/bench/out/deploy.json"
