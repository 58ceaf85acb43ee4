#!/usr/bin/env bash
# End to end with real processes (issue 10's evidence): a `gantry serve`
# without its built-in runner and two `gantry runner` processes on loopback;
# a GitLab-format push webhook runs examples/app's pipeline (busybox jobs,
# `docker build` and push to the local registry, `gantry deploy docker`, a
# check); then python-gitlab reads every job's status and trace.
#
# Usage: bash scripts/serve-e2e.sh --gantry BIN [--backend sqlite|postgres-s3]
#   sqlite       SQLite, logs and artifacts on local disk (the default)
#   postgres-s3  a PostgreSQL cluster started here from the machine's
#                binaries, logs and artifacts in S3 (moto's server)
# Needs what scripts/test.sh sets up: Podman's API, the local registry and
# test images, PostgreSQL binaries, .venv-aws (moto), .venv-pyclients.
# Everything it starts (server, runners, PostgreSQL, moto, the deployed
# container) is stopped and removed when it ends, also on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
GANTRY=""
BACKEND=sqlite
while [ $# -gt 0 ]; do
  case "$1" in
    --gantry) GANTRY="${2:?--gantry needs the path of a gantry binary}"; shift 2 ;;
    --backend) BACKEND="${2:?--backend needs sqlite or postgres-s3}"; shift 2 ;;
    *) echo "serve-e2e.sh: unknown option $1 (use --gantry BIN, --backend sqlite|postgres-s3)" >&2; exit 2 ;;
  esac
done
[ -x "$GANTRY" ] || { echo "serve-e2e.sh: --gantry BIN is required (e.g. target/debug/gantry)" >&2; exit 2; }
case "$BACKEND" in sqlite|postgres-s3) ;; *) echo "serve-e2e.sh: unknown backend $BACKEND" >&2; exit 2 ;; esac
GANTRY="$(cd "$(dirname "$GANTRY")" && pwd)/$(basename "$GANTRY")"
# The deploy job runs `gantry deploy`: jobs find it on the runners' PATH.
export PATH="$(dirname "$GANTRY"):$PATH"
export DOCKER_HOST="${DOCKER_HOST:-unix:///run/podman/podman.sock}"
PY="$ROOT/.venv-pyclients/bin/python"
[ -x "$PY" ] || { echo "serve-e2e.sh: no $PY (run scripts/setup-pyclients.sh)" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK="$(mktemp -d /tmp/gantry-e2e-XXXXXX)"
PIDS=()
PGDATA=""
PGBIN=""
NAME="app-e2e-$$"
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$PGDATA" ]; then runuser -u postgres -- "$PGBIN/pg_ctl" -m immediate -D "$PGDATA" stop >/dev/null 2>&1 || true; fi
  docker ps -aq --filter "label=io.gantry.deploy=$NAME" | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

SERVE_ARGS=()
if [ "$BACKEND" = postgres-s3 ]; then
  PGBIN="$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")")"
  PGPORT="$(free_port)"
  mkdir -p "$WORK/pg" && chown postgres:postgres "$WORK/pg" && chmod 755 "$WORK"
  PGDATA="$WORK/pg/data"
  runuser -u postgres -- "$PGBIN/initdb" -U postgres --auth=trust -E UTF8 --no-sync -D "$PGDATA" >/dev/null
  runuser -u postgres -- "$PGBIN/pg_ctl" -w -t 60 -l "$WORK/pg/log" -D "$PGDATA" \
    -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  runuser -u postgres -- psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE gantry"
  MOTO_PORT="$(free_port)"
  "$ROOT/.venv-aws/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
  PIDS+=($!)
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=eu-west-1
  export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
  for _ in $(seq 1 100); do curl -fsS "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1 && break; sleep 0.2; done
  "$ROOT/.venv-aws/bin/aws" s3 mb s3://gantry-e2e >/dev/null
  SERVE_ARGS+=(--database "postgres://postgres@127.0.0.1:$PGPORT/gantry" --objects s3://gantry-e2e/server)
fi

mkdir -p "$WORK/repo"
cp -a examples/app/. "$WORK/repo/"
git -C "$WORK/repo" init -q -b main
git -C "$WORK/repo" add -A
git -C "$WORK/repo" -c user.name=Gantry -c user.email=e2e@gantry.invalid commit -qm "example app"
SHA="$(git -C "$WORK/repo" rev-parse HEAD)"

PORT="$(free_port)"
URL="http://127.0.0.1:$PORT"
export GANTRY_ADMIN_TOKEN="gpat-e2e-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$GANTRY" serve --data "$WORK/data" --listen "127.0.0.1:$PORT" --no-builtin-runner "${SERVE_ARGS[@]}" \
  >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do curl -fsS "$URL/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$URL/healthz" >/dev/null || { echo "serve-e2e.sh: the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }
TOKEN="$("$GANTRY" serve --data "$WORK/data" "${SERVE_ARGS[@]}" --print-runner-token)"
for n in 1 2; do
  "$GANTRY" runner --url "$URL" --token "$TOKEN" --name "e2e-runner-$n" --work-dir "$WORK/runner-$n" \
    >"$WORK/runner-$n.log" 2>&1 &
  PIDS+=($!)
done

APP_PORT="$(free_port)"
WORK_REPO="$WORK/repo"
export URL SHA NAME APP_PORT WORK_REPO
if ! "$PY" - <<'PY'
import json, os, sys, time, urllib.request
import gitlab

url, sha, name = os.environ["URL"], os.environ["SHA"], os.environ["NAME"]
gl = gitlab.Gitlab(url, private_token=os.environ["GANTRY_ADMIN_TOKEN"])
project = gl.projects.create({"name": name, "import_url": os.environ["WORK_REPO"]})
# Our own port for the deployed app: a project variable wins over the file's.
project.variables.create({"key": "APP_PORT", "value": os.environ["APP_PORT"]})
secret = gl.http_get(f"/projects/{project.id}/gantry_webhook")["secret"]
push = {"ref": "refs/heads/main", "before": "0" * 40, "after": sha, "checkout_sha": sha}
request = urllib.request.Request(
    f"{url}/api/v4/projects/{project.id}/webhooks/gitlab",
    data=json.dumps(push).encode(),
    headers={"X-Gitlab-Token": secret, "X-Gitlab-Event": "Push Hook",
             "Content-Type": "application/json"},
)
pipeline_id = json.load(urllib.request.urlopen(request))["pipeline_id"]
deadline = time.time() + 600
while True:
    pipeline = project.pipelines.get(pipeline_id)
    if pipeline.status in ("success", "failed", "canceled", "manual"):
        break
    if time.time() > deadline:
        sys.exit(f"pipeline {pipeline_id} still {pipeline.status} after 600 s")
    time.sleep(1)
jobs = pipeline.jobs.list(get_all=True)
runners = set()
bad = []
for listed in jobs:
    job = project.jobs.get(listed.id)
    trace = job.trace().decode()
    runner = str((job.runner or {}).get("id") or "-")
    runners.add(runner)
    print(f"  {job.stage:8} {job.name:14} {job.status:8} {runner:12} {len(trace):6} bytes of trace")
    if job.status != "success" and not (job.name == "keepalive" and job.status == "failed" and job.retried):
        bad.append(f"{job.name}: {job.status}\n{trace[-2000:]}")
    if not trace.strip():
        bad.append(f"{job.name}: empty trace")
print(f"pipeline {pipeline_id}: {pipeline.status}; jobs ran on {len(runners)} runner(s) (ids {', '.join(sorted(runners))})")
if pipeline.status != "success" or bad:
    sys.exit("\n".join(bad) or f"pipeline {pipeline.status}")
PY
then
  echo "serve-e2e.sh ($BACKEND): FAILED; server log:" >&2
  tail -n 40 "$WORK/server.log" >&2
  for n in 1 2; do echo "--- runner $n:" >&2; tail -n 20 "$WORK/runner-$n.log" >&2; done
  exit 1
fi
echo "serve-e2e.sh ($BACKEND): ok"
