#!/bin/sh
# Builds the local images the docker-executor tests and benchmarks use (no
# registry is reachable here, so every image is made from the host's
# busybox). Idempotent: an image that exists is kept.
#   localhost/busybox:latest          busybox imported as a root filesystem
#   localhost/gantry-test-httpd:latest  a service: EXPOSE 80, httpd -f -p 80
#   localhost/gantry-test-entrypoint:latest  ENTRYPOINT that does not run its args
# Needs the API socket of scripts/setup-podman.sh.
set -eu

SOCKET=${GANTRY_PODMAN_SOCKET:-/run/podman/podman.sock}
export DOCKER_HOST=${DOCKER_HOST:-unix://$SOCKET}
# podman build through the API socket (remote mode), so it also exercises the
# path a Docker client would take.
PODMAN="podman --url $DOCKER_HOST"

have() { $PODMAN image exists "$1" 2>/dev/null; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! have localhost/busybox:latest; then
    bb=$(command -v busybox || true)
    [ -x /bin/busybox ] && bb=/bin/busybox
    if [ -z "$bb" ]; then
        echo "make-test-images.sh: no busybox on this host (apt-get install busybox-static)" >&2
        exit 1
    fi
    mkdir -p "$work/root/bin" "$work/root/tmp" "$work/root/etc"
    cp "$bb" "$work/root/bin/busybox"
    for c in sh echo cat ls env sleep wget httpd nc id chown chmod mkdir rm touch \
             stat sed grep head tail test true false printf kill ps tr wc; do
        ln -s busybox "$work/root/bin/$c"
    done
    chmod 1777 "$work/root/tmp"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$work/root/etc/passwd"
    echo 'root:x:0:' > "$work/root/etc/group"
    tar -C "$work/root" -cf "$work/busybox.tar" .
    $PODMAN import --change 'ENV PATH=/bin' "$work/busybox.tar" localhost/busybox:latest >/dev/null
    echo "make-test-images.sh: built localhost/busybox:latest"
fi

build() { # name, Containerfile text
    if ! have "$1"; then
        mkdir -p "$work/$1"
        printf '%s\n' "$2" > "$work/$1/Containerfile"
        $PODMAN build -q -t "$1" -f "$work/$1/Containerfile" "$work/$1" >/dev/null
        echo "make-test-images.sh: built $1"
    fi
}

build localhost/gantry-test-httpd:latest 'FROM localhost/busybox:latest
RUN mkdir -p /www && echo "hello from the service" > /www/index.html
EXPOSE 80
CMD ["httpd", "-f", "-p", "80", "-h", "/www"]'

build localhost/gantry-test-entrypoint:latest 'FROM localhost/busybox:latest
ENTRYPOINT ["/bin/echo", "this entrypoint does not run its arguments"]'

echo "make-test-images.sh: images ready"
