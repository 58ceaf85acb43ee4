#!/bin/sh
# Starts a local OCI registry (Debian's docker-registry, distribution v2.8)
# on 127.0.0.1:5000 and tells Podman it is plain HTTP. Idempotent.
set -eu
ADDR=${GANTRY_REGISTRY_ADDR:-127.0.0.1:5000}
DATA=${GANTRY_REGISTRY_DIR:-/var/lib/gantry-registry}
if ! command -v docker-registry >/dev/null 2>&1; then
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq docker-registry curl >/dev/null
fi
mkdir -p "$DATA"
# Podman is told this registry is plain HTTP by scripts/setup-podman.sh.
if ! curl -sf --max-time 2 "http://$ADDR/v2/" >/dev/null 2>&1; then
    printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' "$DATA" "$ADDR" > /etc/gantry-registry.yml
    (cd / && setsid docker-registry serve /etc/gantry-registry.yml >/tmp/gantry-registry.log 2>&1 < /dev/null &)
    i=0
    until curl -sf --max-time 2 "http://$ADDR/v2/" >/dev/null 2>&1; do
        i=$((i + 1)); [ "$i" -gt 100 ] && { echo "setup-registry.sh: registry did not start; see /tmp/gantry-registry.log" >&2; exit 1; }
        sleep 0.2
    done
fi
echo "setup-registry.sh: registry answers on http://$ADDR"
