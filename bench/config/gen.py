#!/usr/bin/env python3
"""Writes a .gitlab-ci.yml with N jobs using extends, anchors, rules and needs."""
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
stages = ["build", "test", "deploy"]
out = []
out.append("stages: [build, test, deploy]\n")
out.append("variables:\n  GLOBAL: one\n  REGION: eu-west-1\n")
out.append(".defaults: &defaults\n  retry: 1\n  interruptible: true\n")
out.append(".rules: &rules\n  - if: $CI_COMMIT_BRANCH == \"main\"\n  - if: $CI_PIPELINE_SOURCE == \"merge_request_event\"\n    when: manual\n  - when: never\n")
out.append(".base:\n  <<: *defaults\n  variables:\n    BASE: \"1\"\n  before_script:\n    - echo setup\n")
per_stage = n // len(stages)
for s, stage in enumerate(stages):
    for i in range(per_stage if s < len(stages) - 1 else n - per_stage * (len(stages) - 1)):
        name = f"{stage}-{i}"
        out.append(f"{name}:\n  extends: .base\n  stage: {stage}\n  script:\n    - echo {name}\n  rules: *rules\n")
        if s > 0:
            prev = stages[s - 1]
            a, b = i % per_stage, (i + 1) % per_stage
            out.append(f"  needs: [\"{prev}-{a}\", \"{prev}-{b}\"]\n")
sys.stdout.write("".join(out))
