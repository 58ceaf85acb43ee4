"""What a runner on another machine pays to get a project's repository
through the server (git smart HTTP, job-token auth) against its peers in the
same run: a local-path clone of the server's mirror (what a runner sharing
the server's disk did before) and a file:// clone (the same pack transfer,
no HTTP). One job of a pipeline on the built-in runner clones each way
several times with its own CI_REPOSITORY_URL and prints the times.

Usage: python3 bench/server/git_transport.py [GANTRY_BIN]
Default BIN: target/release/gantry. Standard library only.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GANTRY = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/gantry")
TOKEN = "gpat-bench-admin-token"
ROUNDS = 5
FILES, COMMITS = 2000, 20

JOB = r"""
clone:
  script:
    - |
      for way in http local file; do
        case $way in
          http) src="$CI_REPOSITORY_URL" ;;
          local) src="$MIRROR" ;;
          file) src="file://$MIRROR" ;;
        esac
        for i in $(seq 1 $ROUNDS); do
          rm -rf "$SCRATCH/c"
          t0=$(date +%s%N)
          git clone -q --mirror "$src" "$SCRATCH/c"
          t1=$(date +%s%N)
          echo "TIME $way $(( (t1 - t0) / 1000000 ))"
        done
      done
      rm -rf "$SCRATCH/c"
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read()
            return r.status, (json.loads(text) if text[:1] in (b"{", b"[") else text.decode())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def git(d, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x")
    return subprocess.run(["git", "-C", d, *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


if not os.access(GANTRY, os.X_OK):
    sys.exit(f"bench/server/git_transport.py: {GANTRY} is not an executable gantry binary")
work = tempfile.mkdtemp(prefix="gantry-bench-git-")
server = None
try:
    repo = os.path.join(work, "repo")
    os.makedirs(repo)
    git(repo, "init", "-q", "-b", "main")
    for c in range(COMMITS):
        for f in range(c, FILES, COMMITS):
            d = os.path.join(repo, f"src/d{f % 40}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{f}.txt"), "w") as fh:
                fh.write(os.urandom(2048).hex())
        if c == 0:
            with open(os.path.join(repo, ".gitlab-ci.yml"), "w") as fh:
                fh.write(JOB)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"c{c}")
    size_mb = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(repo, ".git")) for f in fs) / 1e6

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = os.path.join(work, "data")
    server = subprocess.Popen(
        [GANTRY, "serve", "--data", data, "--listen", f"127.0.0.1:{port}", "--builtin-concurrency", "1"],
        env=dict(os.environ, GANTRY_ADMIN_TOKEN=TOKEN), stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if call("GET", f"{url}/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    H = {"PRIVATE-TOKEN": TOKEN}
    s, project = call("POST", f"{url}/api/v4/projects", {"name": "git-bench", "import_url": repo}, H)
    assert s == 201, project
    pid = project["id"]
    scratch = os.path.join(work, "scratch")
    os.makedirs(scratch)
    variables = [
        {"key": "MIRROR", "value": os.path.join(data, "repos", f"{pid}.git")},
        {"key": "SCRATCH", "value": scratch},
        {"key": "ROUNDS", "value": str(ROUNDS)},
    ]
    s, p = call("POST", f"{url}/api/v4/projects/{pid}/pipeline", {"ref": "main", "variables": variables}, H)
    assert s == 201, p
    for _ in range(3000):
        _, p = call("GET", f"{url}/api/v4/projects/{pid}/pipelines/{p['id']}", headers=H)
        if p["status"] in ("success", "failed", "canceled"):
            break
        time.sleep(0.1)
    _, jobs = call("GET", f"{url}/api/v4/projects/{pid}/pipelines/{p['id']}/jobs", headers=H)
    _, trace = call("GET", f"{url}/api/v4/projects/{pid}/jobs/{jobs[0]['id']}/trace", headers=H)
    assert p["status"] == "success", trace
    times = {}
    for line in trace.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "TIME":
            times.setdefault(parts[1], []).append(int(parts[2]))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"repository: {FILES} files, {COMMITS} commits, .git {size_mb:.1f} MB; median of {ROUNDS} `git clone --mirror` each")
    print(f"through the server (smart HTTP, job token): {med['http']} ms")
    print(f"file:// of the server's mirror (same packing, no HTTP): {med['file']} ms: HTTP costs {med['http'] / max(med['file'], 1):.2f}x")
    print(f"local path of the server's mirror (hard links; the old shared-disk way): {med['local']} ms: HTTP costs {med['http'] / max(med['local'], 1):.1f}x")
    print(f"RESULT http_ms={med['http']} file_ms={med['file']} local_ms={med['local']}")
finally:
    if server:
        server.terminate()
        server.wait()
    shutil.rmtree(work, ignore_errors=True)
