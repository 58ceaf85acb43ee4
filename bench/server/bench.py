"""Measures a running `gantry serve` (see run.sh). Standard library only."""
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

GANTRY = sys.argv[1]
DATABASE = sys.argv[2] if len(sys.argv) > 2 else ""
TOKEN = "gpat-bench-admin-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(method, url, body=None, headers=None, raw=None, timeout=60):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            return r.status, (json.loads(text) if text[:1] in (b"{", b"[") else text)
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Conn:
    """One kept-alive HTTP connection, as a runner holds one (gantry runner's
    reqwest pool and gitlab-runner both reuse connections)."""

    def __init__(self, base):
        self.host, self.port = base.split("//", 1)[1].split(":")
        self.http = None

    def call(self, method, path, body=None, headers=None, timeout=60):
        data = json.dumps(body).encode() if body is not None else None
        h = {"Content-Type": "application/json", **(headers or {})}
        for attempt in range(2):
            try:
                if self.http is None:
                    self.http = http.client.HTTPConnection(self.host, int(self.port), timeout=timeout)
                self.http.request(method, path, body=data, headers=h)
                r = self.http.getresponse()
                text = r.read()
                return r.status, (json.loads(text) if text[:1] in (b"{", b"[") else text)
            except (http.client.HTTPException, OSError):
                self.http = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def git(d, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x")
    return subprocess.run(["git", "-C", d, *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def iso_ms(s):
    # 2026-11-26T00:00:00.123Z
    t = time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    return (time.mktime(t) - time.timezone) * 1000 + int(s[20:23])


work = tempfile.mkdtemp(prefix="gantry-bench-server-")
repo = os.path.join(work, "repo")
os.makedirs(repo)
git(repo, "init", "-q", "-b", "main")
with open(os.path.join(repo, ".gitlab-ci.yml"), "w") as f:
    f.write('job:\n  parallel: 50\n  script: ["true"]\n')
git(repo, "add", "-A")
git(repo, "commit", "-q", "-m", "bench")
sha = git(repo, "rev-parse", "HEAD")
# Branch `big`: one pipeline of 1,000 jobs (5 x parallel: 200) in one stage.
git(repo, "checkout", "-q", "-b", "big")
with open(os.path.join(repo, ".gitlab-ci.yml"), "w") as f:
    for n in range(5):
        f.write(f'job{n}:\n  parallel: 200\n  script: ["true"]\n')
git(repo, "commit", "-q", "-am", "big")
git(repo, "checkout", "-q", "main")

port = free_port()
url = f"http://127.0.0.1:{port}"
args = [GANTRY, "serve", "--data", os.path.join(work, "data"), "--listen", f"127.0.0.1:{port}", "--no-builtin-runner"]
if DATABASE:
    args += ["--database", DATABASE]
server = subprocess.Popen(args, env=dict(os.environ, GANTRY_ADMIN_TOKEN=TOKEN), stderr=subprocess.DEVNULL)
try:
    for _ in range(300):
        try:
            if call("GET", f"{url}/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    time.sleep(2)
    idle = rss_mb(server.pid)
    H = {"PRIVATE-TOKEN": TOKEN}
    s, project = call("POST", f"{url}/api/v4/projects", {"name": "bench", "import_url": repo}, H)
    assert s == 201, project
    pid = project["id"]
    _, hook = call("GET", f"{url}/api/v4/projects/{pid}/gantry_webhook", headers=H)
    secret = hook["secret"]
    registration = subprocess.run([GANTRY, "serve", "--data", os.path.join(work, "data"), "--print-runner-token"],
                                  capture_output=True, text=True, check=True).stdout.strip()

    def register(name):
        s, r = call("POST", f"{url}/api/v4/runners", {"token": registration, "description": name})
        assert s == 201, r
        return r["token"]

    stop = threading.Event()
    claimed = []
    lock = threading.Lock()

    def runner(token):
        conn = Conn(url)
        while not stop.is_set():
            s, job = conn.call("POST", "/api/v4/jobs/request", {"token": token}, timeout=60)
            if s != 201:
                continue
            with lock:
                claimed.append(time.time())
            conn.call("PUT", f"/api/v4/jobs/{job['id']}", {"state": "success"}, {"JOB-TOKEN": job["token"]})

    # 1. Webhook to first job started, one pipeline at a time, 4 runners waiting.
    threads = [threading.Thread(target=runner, args=(register(f"r{i}"),), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    latencies = []
    body = {"object_kind": "push", "ref": "refs/heads/main", "before": "0" * 40, "after": sha, "checkout_sha": sha}
    for _ in range(40):
        sent = time.time() * 1000
        s, r = call("POST", f"{url}/api/v4/projects/{pid}/webhooks/gitlab", body,
                    {"X-Gitlab-Token": secret, "X-Gitlab-Event": "Push Hook"})
        assert s == 201, r
        while True:
            _, jobs = call("GET", f"{url}/api/v4/projects/{pid}/pipelines/{r['pipeline_id']}/jobs?per_page=100", headers=H)
            starts = [iso_ms(j["started_at"]) for j in jobs if j["started_at"]]
            if starts:
                latencies.append(min(starts) - sent)
                break
            time.sleep(0.005)
        # Let the pipeline drain before the next push.
        while call("GET", f"{url}/api/v4/projects/{pid}/pipelines/{r['pipeline_id']}", headers=H)[1]["status"] not in ("success", "failed", "canceled"):
            time.sleep(0.02)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]

    # 2. Dispatch: 1,000 queued jobs (20 pipelines x 50) to the 4 runners.
    stop.set()
    for t in threads:
        t.join(timeout=70)
    stop.clear()
    claimed.clear()
    for _ in range(20):
        s, r = call("POST", f"{url}/api/v4/projects/{pid}/pipeline", {"ref": "main"}, H)
        assert s == 201, r
    threads = [threading.Thread(target=runner, args=(register(f"d{i}"),), daemon=True) for i in range(4)]
    t0 = time.time()
    server_cpu0, client_cpu0 = cpu_s(server.pid), time.process_time()
    for t in threads:
        t.start()
    while len(claimed) < 1000 and time.time() - t0 < 300:
        time.sleep(0.05)
    dispatch = len(claimed) / (max(claimed) - t0) if claimed else 0.0
    dispatch_wall = (max(claimed) - t0) if claimed else 0.0
    server_cpu = cpu_s(server.pid) - server_cpu0
    client_cpu = time.process_time() - client_cpu0
    stop.set()

    # 2b. One pipeline of 1,000 jobs: every job's end is an event of that
    # pipeline (the schedule decides what follows), so this is the cost of
    # one event in a large pipeline, 1,000 times.
    for t in threads:
        t.join(timeout=70)
    claimed.clear()
    stop.clear()
    threads = [threading.Thread(target=runner, args=(register(f"b{i}"),), daemon=True) for i in range(4)]
    t0 = time.time()
    s, big = call("POST", f"{url}/api/v4/projects/{pid}/pipeline", {"ref": "big"}, H)
    assert s == 201, big
    for t in threads:
        t.start()
    big_status = ""
    while time.time() - t0 < 600:
        big_status = call("GET", f"{url}/api/v4/projects/{pid}/pipelines/{big['id']}", headers=H)[1]["status"]
        if big_status in ("success", "failed", "canceled"):
            break
        time.sleep(0.05)
    big_seconds = time.time() - t0
    big_jobs = len(claimed)
    stop.set()

    # 3. Log ingestion: 64 MiB in 64 KiB chunks into one running job.
    call("POST", f"{url}/api/v4/projects/{pid}/pipeline", {"ref": "main"}, H)
    tok = register("logger")
    s, job = call("POST", f"{url}/api/v4/jobs/request", {"token": tok})
    chunk = (b"x" * 79 + b"\n") * 819
    offset = 0
    t0 = time.time()
    while offset < 64 << 20:
        s, _ = call("PATCH", f"{url}/api/v4/jobs/{job['id']}/trace", raw=chunk,
                    headers={"JOB-TOKEN": job["token"], "Content-Range": f"{offset}-{offset + len(chunk) - 1}"})
        assert s == 202, s
        offset += len(chunk)
    mbps = offset / (1 << 20) / (time.time() - t0)
    loaded = rss_mb(server.pid)
finally:
    server.terminate()
    server.wait()
    shutil.rmtree(work, ignore_errors=True)

print(f"database: {'postgres' if DATABASE else 'sqlite'}; binary: {GANTRY}")
print(f"webhook -> first job started: p50 {p50:.1f} ms, p99 {p99:.1f} ms (n={len(latencies)}; target p50 < 100 ms: ratio {100 / max(p50, 0.001):.1f}x)")
print(f"dispatch to 4 runners: {dispatch:.0f} jobs/s (1,000 jobs; target >= 500/s: ratio {dispatch / 500:.2f}x)")
print(f"  during dispatch ({dispatch_wall:.2f} s): server CPU {server_cpu:.2f} s ({server_cpu * 1000 / max(len(claimed), 1):.2f} ms a job), "
      f"the bench's runner clients CPU {client_cpu:.2f} s; {os.cpu_count()} cores")
print(f"one 1,000-job pipeline, 4 runners: {big_seconds:.1f} s to {big_status} ({big_jobs} jobs run, {big_jobs / max(big_seconds, 0.001):.0f} jobs/s)")
print(f"log ingestion: {mbps:.1f} MB/s (64 MiB in 64 KiB chunks, masked, stored)")
print(f"server RSS: idle {idle:.1f} MB (target < 50 MB: ratio {50 / max(idle, 0.1):.1f}x), after the load {loaded:.1f} MB")
print(f"RESULT p50_ms={p50:.1f} dispatch_per_s={dispatch:.0f} big_pipeline_s={big_seconds:.1f} log_mb_s={mbps:.1f} idle_mb={idle:.1f}")
