"""Drives a running `gantry serve` with python-gitlab and its `gitlab`
command, exactly as users' scripts do. Exits non-zero on the first
difference from what GitLab would answer.

Environment: GANTRY_URL, GANTRY_TOKEN, GANTRY_REPO (a git repository whose
pipeline has jobs build, flaky, deploy (manual) and slow), GANTRY_GITLAB_CLI.
"""
import os
import subprocess
import sys
import tempfile
import time

import gitlab

url = os.environ["GANTRY_URL"]
token = os.environ["GANTRY_TOKEN"]
repo = os.environ["GANTRY_REPO"]

FINAL = {"success", "failed", "canceled", "skipped", "manual"}


def wait(project, pipeline_id, timeout=90):
    deadline = time.time() + timeout
    while True:
        p = project.pipelines.get(pipeline_id)
        if p.status in FINAL:
            return p
        if time.time() > deadline:
            sys.exit(f"pipeline {pipeline_id} still {p.status}")
        time.sleep(0.2)


def wait_job(project, job_id, timeout=60):
    deadline = time.time() + timeout
    while True:
        j = project.jobs.get(job_id)
        if j.status in {"success", "failed", "canceled", "skipped"}:
            return j
        if time.time() > deadline:
            sys.exit(f"job {job_id} still {j.status}")
        time.sleep(0.2)


gl = gitlab.Gitlab(url, private_token=token)
gl.auth()
assert gl.user.username == "root", gl.user.username

project = gl.projects.create({"name": "pyapp", "import_url": repo})
assert project.default_branch == "main", project.default_branch
same = gl.projects.get(project.path_with_namespace)
assert same.id == project.id

# Project variables: create, list, read, update, delete.
project.variables.create({"key": "DEPLOY_TOKEN", "value": "s3cr3t-deploy-token", "masked": True})
project.variables.create({"key": "TEMP", "value": "x"})
keys = sorted(v.key for v in project.variables.list(get_all=True))
assert keys == ["DEPLOY_TOKEN", "TEMP"], keys
v = project.variables.get("TEMP")
v.value = "y"
v.save()
assert project.variables.get("TEMP").value == "y"
project.variables.delete("TEMP")
assert [v.key for v in project.variables.list(get_all=True)] == ["DEPLOY_TOKEN"]

# A pipeline on a ref with variables.
pipeline = project.pipelines.create({"ref": "main", "variables": [{"key": "GREETING", "value": "hi from python"}]})
assert pipeline.source == "api", pipeline.source
pipeline = wait(project, pipeline.id)
jobs = {j.name: j for j in pipeline.jobs.list(get_all=True)}
assert set(jobs) == {"build", "flaky", "deploy", "slow"}, set(jobs)
assert jobs["build"].status == "success", jobs["build"].status
assert jobs["flaky"].status == "failed", jobs["flaky"].status
assert jobs["deploy"].status == "manual", jobs["deploy"].status

build = project.jobs.get(jobs["build"].id)
trace = build.trace().decode()
assert "hi from python" in trace, trace
assert "s3cr3t-deploy-token" not in trace, trace
assert "[MASKED]" in trace, trace
artifacts = build.artifacts()
assert artifacts[:2] == b"PK", artifacts[:10]

# Play the manual job.
deploy = project.jobs.get(jobs["deploy"].id)
deploy.play()
deploy = wait_job(project, deploy.id)
assert deploy.status == "success", deploy.status
assert "deployed" in deploy.trace().decode()

# Retry the failed job: a new job, failing again.
flaky = project.jobs.get(jobs["flaky"].id)
retried = flaky.retry()
assert retried["id"] != flaky.id, retried
again = wait_job(project, retried["id"])
assert again.status == "failed", again.status

# Cancel a pipeline with a long job; retry it.
pipeline2 = project.pipelines.create({"ref": "main", "variables": [{"key": "SLOW", "value": "1"}]})
deadline = time.time() + 30
while project.pipelines.get(pipeline2.id).status not in {"running"}:
    if time.time() > deadline:
        sys.exit("second pipeline never ran")
    time.sleep(0.1)
pipeline2.cancel()
p2 = wait(project, pipeline2.id)
assert p2.status == "canceled", p2.status
pipeline2.retry()
assert project.pipelines.get(pipeline2.id).status not in {"canceled"}
project.pipelines.get(pipeline2.id).cancel()

listed = [p.id for p in project.pipelines.list(get_all=True)]
assert listed == [pipeline2.id, pipeline.id], listed

# The `gitlab` command reads the same.
with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as cfg:
    cfg.write(f"[global]\ndefault = gantry\n[gantry]\nurl = {url}\nprivate_token = {token}\n")
cli = os.environ.get("GANTRY_GITLAB_CLI", "gitlab")
out = subprocess.run(
    [cli, "-c", cfg.name, "-o", "json", "project-pipeline", "list", "--project-id", str(project.id)],
    capture_output=True, text=True,
)
assert out.returncode == 0, out.stderr
assert str(pipeline.id) in out.stdout, out.stdout
out = subprocess.run(
    [cli, "-c", cfg.name, "project-job", "trace", "--project-id", str(project.id), "--id", str(build.id)],
    capture_output=True, text=True,
)
assert out.returncode == 0, out.stderr
assert "hi from python" in out.stdout, out.stdout
print("python-gitlab: all checks passed")
