#!/bin/sh
# Installs and starts Podman with its Docker-compatible API socket, as
# verified in environment.md (Debian 12, root). Idempotent: safe to re-run.
#   scripts/setup-podman.sh        then   DOCKER_HOST=unix:///run/podman/podman.sock
set -eu

SOCKET=${GANTRY_PODMAN_SOCKET:-/run/podman/podman.sock}
LOG=${GANTRY_PODMAN_LOG:-/tmp/gantry-podman-service.log}

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-podman.sh: must run as root (it installs packages and starts the engine)" >&2
    exit 2
fi

need_install=
for pkg in podman runc busybox-static docker-registry curl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_install="$need_install $pkg"
done
if [ -n "$need_install" ]; then
    echo "setup-podman.sh: installing$need_install"
    # Another apt may hold the lock (e.g. a background install): wait for it.
    i=0
    while command -v fuser >/dev/null 2>&1 \
        && fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -gt 900 ] && { echo "setup-podman.sh: the dpkg lock is held for 15 min" >&2; exit 1; }
        sleep 1
    done
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq $need_install >/dev/null
fi

# The three settings this sandbox needs (environment.md): no nofile ulimit
# above the hard limit, runc instead of crun, cgroupfs, file events.
mkdir -p /etc/containers
CONF_WANT='[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
if [ "$(cat /etc/containers/containers.conf 2>/dev/null)" != "$CONF_WANT" ]; then
    printf '%s\n' "$CONF_WANT" > /etc/containers/containers.conf
fi

# The local registry of scripts/setup-registry.sh speaks plain HTTP. The
# service reads this at start, so a change means a restart.
REG_CONF=/etc/containers/registries.conf.d/50-gantry-local.conf
REG_WANT='[[registry]]
location = "127.0.0.1:5000"
insecure = true'
restart=
mkdir -p /etc/containers/registries.conf.d
if [ "$(cat "$REG_CONF" 2>/dev/null)" != "$REG_WANT" ]; then
    printf '%s\n' "$REG_WANT" > "$REG_CONF"
    restart=yes
fi

answers() {
    curl -sf --max-time 2 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1
}

if [ -n "$restart" ] && answers; then
    pkill -f "podman system service --time=0 unix://$SOCKET" || true
    i=0
    while answers && [ "$i" -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
fi

if ! answers; then
    mkdir -p "$(dirname "$SOCKET")"
    rm -f "$SOCKET"
    # setsid: the service must outlive this script and its terminal. From /:
    # a service left in a directory that is later deleted (a CI checkout)
    # answers pings but can no longer start containers ("write child:
    # broken pipe").
    cd /
    setsid podman system service --time=0 "unix://$SOCKET" >"$LOG" 2>&1 < /dev/null &
    i=0
    until answers; do
        i=$((i + 1))
        if [ "$i" -gt 100 ]; then
            echo "setup-podman.sh: the API socket $SOCKET did not answer in 20 s; log: $LOG" >&2
            tail -20 "$LOG" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
fi
echo "setup-podman.sh: podman API answers on unix://$SOCKET"
