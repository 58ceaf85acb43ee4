#!/usr/bin/env bash
# The dashboard's overview with 100,000 jobs (10,000 pipelines, 20 projects,
# 500 refs) on SQLite, and on PostgreSQL when its binaries are installed:
# p50/p95 of GET /dash (the whole overview page: latest pipeline per project
# and ref, 50 newest pipelines, all their jobs) against the 100 ms target,
# and the ratio to the server's own JSON list of one project's 50 newest
# pipelines (GET /api/v4/projects/1/pipelines) in the same run.
# GANTRY_BIN defaults to target/release/gantry (built when missing);
# GANTRY_BIN=example uses crates/gantry-server/examples/dashboard_bench_server
# (the same server start without the CLI, quicker to build; dev profile);
# GANTRY_BIN=example:PATH runs an already built copy of that example (e.g.
# of an older commit, to compare before and after in the same conditions).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${GANTRY_BIN:-$root/target/release/gantry}"
if [[ "$bin" == example:* ]]; then
  bin="${bin#example:}"
  example=1
elif [ "$bin" = example ]; then
  # The dev profile (dependencies at opt-level 1): a slower, conservative figure.
  (cd "$root" && cargo build -q -p gantry-server --example dashboard_bench_server)
  bin="$root/target/debug/examples/dashboard_bench_server"
  example=1
else
  [ -x "$bin" ] || (cd "$root" && cargo build --release -p gantry)
  example=0
fi
requests="${REQUESTS:-200}"
token="gpat-bench-admin-token-000000000000"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${pgdata:-}" ] && su postgres -c "$pgbin/pg_ctl -D $pgdata -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

serve() { # DATA_DIR DATABASE_ARGS... ; sets url
  local data="$1"; shift
  local p; p=$(port)
  if [ "$example" = 1 ]; then
    GANTRY_ADMIN_TOKEN="$token" "$bin" "$data" "127.0.0.1:$p" "$@" >"$data.log" 2>&1 &
  else
    GANTRY_ADMIN_TOKEN="$token" "$bin" serve --data "$data" --listen "127.0.0.1:$p" --no-builtin-runner \
      ${1:+--database "$1"} >"$data.log" 2>&1 &
  fi
  pids+=($!)
  url="http://127.0.0.1:$p"
  for _ in $(seq 1 300); do curl -fs "$url/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "gantry serve did not start:"; cat "$data.log"; exit 1
}

stop_last() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

# p50 p95 (ms) of N GETs of a URL with extra curl arguments.
measure() {
  local target="$1"; shift
  for _ in $(seq 1 "$requests"); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$@" "$target"
  done | python3 -c '
import sys
rows = [l.split() for l in sys.stdin]
bad = [c for c, _ in rows if c != "200"]
if bad: sys.exit(f"non-200 answers: {bad[:5]}")
t = sorted(float(x) * 1000 for _, x in rows)
print(f"{t[len(t)//2]:.1f} {t[int(len(t)*0.95)-1]:.1f}")'
}

bench() { # NAME
  local jar="$work/$1.cookies"
  local csrf
  csrf=$(curl -s -c "$jar" "$url/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
  curl -s -o /dev/null -b "$jar" -c "$jar" --data-urlencode "csrf=$csrf" --data-urlencode "username=root" \
    --data-urlencode "password=$token" --data-urlencode "next=/dash" "$url/login"
  curl -s -b "$jar" -o "$work/overview.html" "$url/dash" # warm-up
  grep -q 'project-20' "$work/overview.html" || { echo "the overview does not show the seeded projects"; exit 1; }
  read -r d50 d95 < <(measure "$url/dash" -b "$jar")
  read -r f50 f95 < <(measure "$url/dash?status=failed" -b "$jar")
  read -r a50 a95 < <(measure "$url/api/v4/projects/1/pipelines?per_page=50" -H "PRIVATE-TOKEN: $token")
  python3 - "$1" "$d50" "$d95" "$f50" "$f95" "$a50" "$a95" <<'PY'
import sys
name, d50, d95, f50, f95, a50, a95 = sys.argv[1], *map(float, sys.argv[2:])
print(f"{name:10} overview p50 {d50:6.1f} ms  p95 {d95:6.1f} ms  ({'under' if d95 < 100 else 'OVER'} the 100 ms target)")
print(f"{name:10} overview?status=failed p50 {f50:6.1f} ms  p95 {f95:6.1f} ms")
print(f"{name:10} API list of one project's 50 pipelines p50 {a50:6.1f} ms  p95 {a95:6.1f} ms; overview/API p95 ratio {d95 / a95:.2f}")
PY
}

echo "gantry: $bin; $requests requests per figure"
# SQLite: create the schema, seed, restart.
serve "$work/sqlite"
stop_last
sqlite3 "$work/sqlite/gantry.db" < "$here/seed.sql"
echo "sqlite     jobs: $(sqlite3 "$work/sqlite/gantry.db" 'SELECT COUNT(*) FROM jobs')"
serve "$work/sqlite"
bench sqlite
stop_last

# PostgreSQL, when installed.
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] && id postgres >/dev/null 2>&1; then
  pgdata="$work/pg"; mkdir -p "$pgdata"; chown postgres "$work" "$pgdata"; chmod 755 "$work"
  pgport=$(port)
  su postgres -c "$pgbin/initdb -U postgres --auth=trust -D $pgdata" >/dev/null
  su postgres -c "$pgbin/pg_ctl -w -D $pgdata -l $pgdata/log -o '-p $pgport -k /tmp -c fsync=off' start" >/dev/null
  db="postgres://postgres@127.0.0.1:$pgport/postgres"
  serve "$work/pgdata" "$db"
  stop_last
  psql -q "$db" < "$here/seed.sql"
  echo "postgres   jobs: $(psql -tA "$db" -c 'SELECT COUNT(*) FROM jobs')"
  serve "$work/pgdata" "$db"
  bench postgres
  stop_last
else
  echo "postgres   skipped: PostgreSQL's binaries are not installed (scripts/setup-postgres.sh)"
fi
