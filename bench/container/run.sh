#!/bin/sh
# Per-job overhead of a container job on the docker executor (prepare + one
# `true` script + cleanup, through the Docker Engine API) against
# `podman run --rm localhost/busybox:latest true`; prints both and the ratio
# (issue 3 target: at most 1.3x).
#   bench/container/run.sh            # 10 rounds
#   GANTRY_BENCH_ROUNDS=20 GANTRY_BENCH_ENFORCE=1 bench/container/run.sh
# Needs root for the engine set-up on a fresh machine (scripts/setup-podman.sh).
set -eu
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -eq 0 ]; then
    scripts/setup-podman.sh
fi
export DOCKER_HOST=${DOCKER_HOST:-unix:///run/podman/podman.sock}
scripts/make-test-images.sh
GANTRY_REQUIRE_PODMAN=1 cargo test -q -p gantry-engine --test docker_bench -- \
    --ignored --nocapture --test-threads=1 2>&1 | grep -v '^running\|^test \|^$\|test result'
