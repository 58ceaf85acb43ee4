#!/usr/bin/env bash
# One command: a `gantry serve` with the example project registered, its
# pipeline run from a GitLab-format push webhook, and the URL printed.
# Installs what the example needs (Podman API socket, busybox image, local
# registry), builds gantry, copies examples/app into a git repository, starts
# the server (SQLite in $DEMO/data, built-in runner) and leaves it running.
#
# Usage: bash scripts/serve-demo.sh [--gantry BIN] [--stop]
#   --stop: once the pipeline ended, stop the server and remove the deployed
#           container (what CI runs: scripts/test.sh).
# Environment: GANTRY_DEMO_DIR (default /tmp/gantry-serve-demo),
# GANTRY_DEMO_PORT (default 8080), GANTRY_ADMIN_TOKEN (default: a new one).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
GANTRY=""
STOP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gantry) GANTRY="${2:?--gantry needs the path of a gantry binary}"; shift 2 ;;
    --stop) STOP=1; shift ;;
    *) echo "serve-demo.sh: unknown option $1 (use --gantry BIN, --stop)" >&2; exit 2 ;;
  esac
done
bash scripts/setup-podman.sh
bash scripts/make-test-images.sh
bash scripts/setup-registry.sh
command -v docker >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman-docker >/dev/null
if [ -z "$GANTRY" ]; then
  cargo build --release -q -p gantry
  GANTRY="$ROOT/target/release/gantry"
fi
# The example's deploy job runs `gantry deploy`: jobs find it on the PATH.
GANTRY="$(cd "$(dirname "$GANTRY")" && pwd)/$(basename "$GANTRY")"
export PATH="$(dirname "$GANTRY"):$PATH"
export DOCKER_HOST="${DOCKER_HOST:-unix:///run/podman/podman.sock}"
DEMO="${GANTRY_DEMO_DIR:-/tmp/gantry-serve-demo}"
PORT="${GANTRY_DEMO_PORT:-8080}"
URL="http://127.0.0.1:$PORT"
export GANTRY_ADMIN_TOKEN="${GANTRY_ADMIN_TOKEN:-gpat-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
if [ -f "$DEMO/server.pid" ] && kill -0 "$(cat "$DEMO/server.pid")" 2>/dev/null; then
  kill "$(cat "$DEMO/server.pid")" && sleep 1
fi
rm -rf "$DEMO" && mkdir -p "$DEMO/repo"
cp -a examples/app/. "$DEMO/repo/"
git -C "$DEMO/repo" init -q -b main
git -C "$DEMO/repo" add -A
git -C "$DEMO/repo" -c user.name=Gantry -c user.email=demo@gantry.invalid commit -qm "example app"
SHA="$(git -C "$DEMO/repo" rev-parse HEAD)"

"$GANTRY" serve --data "$DEMO/data" --listen "127.0.0.1:$PORT" >"$DEMO/server.log" 2>&1 &
echo $! >"$DEMO/server.pid"
stop_demo() {
  kill "$(cat "$DEMO/server.pid")" 2>/dev/null || true
  docker ps -aq --filter label=io.gantry.deploy=app | xargs -r docker rm -f >/dev/null
}
# A failure before the end leaves nothing running.
trap 'stop_demo' ERR
[ -n "$STOP" ] && trap 'stop_demo' EXIT
for _ in $(seq 1 100); do curl -fsS "$URL/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$URL/healthz" >/dev/null || { echo "the server did not start; see $DEMO/server.log" >&2; exit 1; }

api() { curl -fsS -H "PRIVATE-TOKEN: $GANTRY_ADMIN_TOKEN" -H 'Content-Type: application/json' "$@"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
PROJECT="$(api -X POST "$URL/api/v4/projects" -d "{\"name\": \"app\", \"import_url\": \"$DEMO/repo\"}" | json '["id"]')"
SECRET="$(api "$URL/api/v4/projects/$PROJECT/gantry_webhook" | json '["secret"]')"
PIPELINE="$(curl -fsS -X POST "$URL/api/v4/projects/$PROJECT/webhooks/gitlab" \
  -H "X-Gitlab-Token: $SECRET" -H 'X-Gitlab-Event: Push Hook' -H 'Content-Type: application/json' \
  -d "{\"ref\": \"refs/heads/main\", \"before\": \"0000000000000000000000000000000000000000\", \"after\": \"$SHA\", \"checkout_sha\": \"$SHA\"}" \
  | json '["pipeline_id"]')"
echo "pipeline $PIPELINE started by a push webhook; waiting for it to finish..."
STATUS=running
for _ in $(seq 1 600); do
  STATUS="$(api "$URL/api/v4/projects/$PROJECT/pipelines/$PIPELINE" | json '["status"]')"
  case "$STATUS" in success|failed|canceled|manual) break ;; esac
  sleep 1
done
api "$URL/api/v4/projects/$PROJECT/pipelines/$PIPELINE/jobs?per_page=100" \
  | python3 -c 'import json,sys; [print("  %-8s %-20s %s" % (j["stage"], j["name"], j["status"])) for j in json.load(sys.stdin)]'
trap - ERR
cat <<MSG
pipeline $PIPELINE: $STATUS, $URL/dash/pipelines/$PIPELINE (sign in as root with the admin token)
gantry serve is running at $URL (pid $(cat "$DEMO/server.pid"), log $DEMO/server.log)
  admin token:    $GANTRY_ADMIN_TOKEN
  python-gitlab:  gitlab.Gitlab("$URL", private_token="$GANTRY_ADMIN_TOKEN")
  a job's log:    curl -H "PRIVATE-TOKEN: \$TOKEN" $URL/api/v4/projects/$PROJECT/jobs/JOB/trace
  more runners:   $GANTRY runner --url $URL --token $("$GANTRY" serve --data "$DEMO/data" --print-runner-token)
  stop it:        kill \$(cat $DEMO/server.pid)
MSG
if [ -n "$STOP" ]; then echo "(--stop: the server is stopped and the deployed container removed)"; fi
[ "$STATUS" = success ]
