#!/usr/bin/env bash
# Makes PostgreSQL's server binaries (initdb, pg_ctl, postgres) available for
# the server's tests, which start a throwaway cluster in a temporary
# directory (crates/gantry-server/tests/support). Idempotent; Debian 12.
# Prints the directory holding the binaries (export GANTRY_PG_BIN to it to
# override discovery).
set -euo pipefail
find_bin() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
  done
  return 1
}
if ! bin="$(find_bin)"; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq postgresql >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
  bin="$(find_bin)"
fi
# The cluster cannot run as root: the tests use this account when root.
id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql --shell /bin/false postgres
echo "setup-postgres: PostgreSQL binaries in $bin"
