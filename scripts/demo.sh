#!/usr/bin/env bash
# The README's main command: installs what the example needs (Podman API
# socket, busybox image, local registry), builds gantry, copies examples/app
# into a fresh git repository and runs its pipeline with `gantry run`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash scripts/setup-podman.sh
bash scripts/make-test-images.sh
bash scripts/setup-registry.sh
# A `docker` client for the pipeline's `docker build`: Podman's own, when no
# Docker client is installed.
command -v docker >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman-docker >/dev/null
cargo build --release -q -p gantry
export PATH="$ROOT/target/release:$PATH"
export DOCKER_HOST="${DOCKER_HOST:-unix:///run/podman/podman.sock}"
DEMO="${GANTRY_DEMO_DIR:-/tmp/gantry-demo}"
rm -rf "$DEMO" && mkdir -p "$DEMO"
cp -a examples/app/. "$DEMO/"
git -C "$DEMO" init -q -b main
git -C "$DEMO" add -A
git -C "$DEMO" -c user.name=Gantry -c user.email=demo@gantry.invalid commit -qm "example app"
cd "$DEMO"
gantry plan
gantry run "$@"
