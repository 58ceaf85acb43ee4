#!/usr/bin/env bash
# Creates .venv-aws in the repository root with moto[server], awscli and ecs-deploy (PyPI).
# Idempotent: a venv that already has all three tools is left alone.
# Used by gantry-deploy's moto tests and by bench/deploy.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GANTRY_AWS_VENV:-$root/.venv-aws}"
if [[ -x "$venv/bin/moto_server" && -x "$venv/bin/aws" && -x "$venv/bin/ecs" ]]; then
  echo "setup-moto: $venv is ready"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1' awscli ecs-deploy
"$venv/bin/moto_server" --help >/dev/null
echo "setup-moto: installed moto_server, aws and ecs into $venv"
