"""Manages a project's members with python-gitlab, as users' scripts do,
and checks what GitLab would answer. Exits non-zero on the first
difference.

Environment: GANTRY_URL, GANTRY_TOKEN (an administrator), GANTRY_PROJECT,
DEV_ID (a server-wide developer), VIEWER_ID (a server-wide viewer).
"""
import os
import sys

import gitlab

gl = gitlab.Gitlab(os.environ["GANTRY_URL"], private_token=os.environ["GANTRY_TOKEN"])
project = gl.projects.get(int(os.environ["GANTRY_PROJECT"]))
dev, viewer = int(os.environ["DEV_ID"]), int(os.environ["VIEWER_ID"])

assert project.members.list(get_all=True) == [], "a new project has no members"
# Everyone has their server-wide access until named.
assert project.members_all.get(dev).access_level == 30
assert project.members_all.get(viewer).access_level == 20

project.members.create({"user_id": viewer, "access_level": gitlab.const.AccessLevel.MAINTAINER})
project.members.create({"user_id": dev, "access_level": gitlab.const.AccessLevel.REPORTER})
levels = {m.id: m.access_level for m in project.members.list(get_all=True)}
assert levels == {viewer: 40, dev: 20}, levels
assert project.members_all.get(viewer).access_level == 40

try:
    project.members.create({"user_id": dev, "access_level": 30})
    sys.exit("adding a member twice was accepted")
except gitlab.exceptions.GitlabCreateError as e:
    assert e.response_code == 409, e

try:
    project.members.create({"user_id": dev, "access_level": 35})
    sys.exit("an access level GitLab does not have was accepted")
except gitlab.exceptions.GitlabCreateError as e:
    assert e.response_code == 400, e

member = project.members.get(dev)
member.access_level = gitlab.const.AccessLevel.GUEST
member.save()
assert project.members.get(dev).access_level == 20, "guest reads, as a reporter"

print("all checks passed")
