#!/usr/bin/env bash
# Installs everything the tests need (Podman served as a Docker API, test
# images, a local registry, moto in a venv) and runs every check and test.
# Idempotent; run as root on Debian 12. This is what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages and services"
bash scripts/setup-podman.sh
bash scripts/make-test-images.sh
bash scripts/setup-registry.sh
bash scripts/setup-moto.sh
bash scripts/setup-postgres.sh
bash scripts/setup-pyclients.sh
bash scripts/setup-chromium.sh
# A `docker` client for the example pipeline's `docker build`: Podman's own
# when no Docker client is installed.
command -v docker >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman-docker >/dev/null

# Tests that need Podman or moto skip when those are missing on a developer
# machine; here they are installed, so a skip would hide a failure.
export GANTRY_REQUIRE_PODMAN=1 GANTRY_REQUIRE_MOTO=1
export GANTRY_REQUIRE_POSTGRES=1 GANTRY_REQUIRE_PYCLIENTS=1
export GANTRY_REQUIRE_CHROMIUM=1
export DOCKER_HOST="${DOCKER_HOST:-unix:///run/podman/podman.sock}"

# A CI build starts clean and is thrown away: incremental state would only
# take disk (3 GB here) that a CI machine may not have.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings

step "conformance (GitLab's schema fixtures)"
cargo test -q -p gantry-config --test conformance -- --nocapture

step "tests"
cargo test --workspace --no-fail-fast
df -h . | tail -1 | awk '{print "disk after tests: " $3 " used, " $4 " free"}' 

step "serve demo (README's one command; the server stops after its pipeline)"
DEMO_DIR="$(mktemp -d)" && GANTRY_DEMO_DIR="$DEMO_DIR" GANTRY_DEMO_PORT=18190 bash scripts/serve-demo.sh --gantry target/debug/gantry --stop && rm -rf "$DEMO_DIR"

step "server end to end (gantry serve + two gantry runner processes, examples/app, python-gitlab)"
bash scripts/serve-e2e.sh --gantry target/debug/gantry --backend sqlite
bash scripts/serve-e2e.sh --gantry target/debug/gantry --backend postgres-s3
