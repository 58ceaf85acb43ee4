"""Stops environments with python-gitlab as users' scripts do: GitLab's
`force` (no on_stop job) and `stop_stale` (python-gitlab has no method
for it, so its generic `http_post`, as its docs advise). Exits non-zero
on the first difference from what GitLab would answer.

Environment: GANTRY_URL, GANTRY_TOKEN, GANTRY_PROJECT (a project whose
environments review/a and review/d are fresh, review/b and qa are 30 days
old, qa is protected; review/a and review/b have on_stop jobs).
"""
import datetime
import os
import sys
import time

import gitlab

gl = gitlab.Gitlab(os.environ["GANTRY_URL"], private_token=os.environ["GANTRY_TOKEN"])
project = gl.projects.get(int(os.environ["GANTRY_PROJECT"]))


def env(name):
    found = [e for e in project.environments.list(get_all=True) if e.name == name]
    assert len(found) == 1, (name, found)
    return project.environments.get(found[0].id)


assert {e.name for e in project.environments.list(get_all=True)} == {
    "review/a", "review/b", "review/d", "qa"}

# force: stopped at once, its on_stop job is not run.
a = env("review/a")
assert a.state == "available", a.state
answer = a.stop(force=True)
assert answer["state"] == "stopped", answer
assert env("review/a").state == "stopped"
try:
    env("review/a").stop()
    sys.exit("stopping a stopped environment was accepted")
except gitlab.exceptions.GitlabStopError as e:
    assert e.response_code == 400, e

# stop_stale: `before` is required and at least a week old.
path = f"/projects/{project.id}/environments/stop_stale"
for bad in [None, "yesterday", (datetime.date.today() - datetime.timedelta(days=1)).isoformat()]:
    try:
        gl.http_post(path, query_data={} if bad is None else {"before": bad})
        sys.exit(f"stop_stale accepted before={bad!r}")
    except gitlab.exceptions.GitlabHttpError as e:
        assert e.response_code == 400, (bad, e)
before = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=8)).isoformat()
answer = gl.http_post(path, query_data={"before": before})
assert answer["message"] == "Successfully requested stop for all stale environments", answer

# review/b plays its stop job and ends stopped; qa (protected) and
# review/d (fresh) stay available.
deadline = time.time() + 60
while env("review/b").state != "stopped":
    if time.time() > deadline:
        sys.exit(f"review/b never stopped: {env('review/b').state}")
    time.sleep(0.1)
assert env("qa").state == "available", env("qa").state
assert env("review/d").state == "available", env("review/d").state
assert env("review/a").state == "stopped"
print("environments stop: all checks passed")
