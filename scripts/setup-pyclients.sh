#!/usr/bin/env bash
# Creates .venv-pyclients in the repository root with python-gitlab (PyPI),
# the library and `gitlab` command the server's API tests drive.
# Idempotent: a venv that already has them is left alone.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GANTRY_PYCLIENTS_VENV:-$root/.venv-pyclients}"
if [[ -x "$venv/bin/gitlab" ]] && "$venv/bin/python" -c 'import gitlab' 2>/dev/null; then
  echo "setup-pyclients: $venv is ready"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check 'python-gitlab>=4'
"$venv/bin/python" -c 'import gitlab; print("setup-pyclients: python-gitlab", gitlab.__version__, "in '"$venv"'")'
