# AnySR Serve: one shared-weight AnySR model behind `anysr serve`, one process per device.
#
#   docker build -t anysr-serve:cuda .                                    # GPU hosts (default)
#   docker build -t anysr-serve:cpu \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .  # CPU-only hosts
#   docker run --gpus 1 -p 8000:8000 --stop-timeout 45 anysr-serve:cuda
#
# TORCH_INDEX_URL picks the torch build and is used for the torch wheel alone (--no-deps): PyPI's Linux
# x86_64 wheel is the CUDA build (its CUDA libraries come as nvidia-* wheels, so a slim base works and
# the host needs only the NVIDIA driver and container toolkit); download.pytorch.org/whl/cpu is the CPU
# build, several times smaller; download.pytorch.org/whl/cuXYZ pins a CUDA release. Everything else,
# torch's own dependencies included, comes from PyPI at the versions in constraints.txt.
# The index URL is used in the build stage only: it appears in no label, no environment variable and
# no history entry of the image that runs (deploy/ci/container_test.sh checks this).
# Settings are ANYSR_* environment variables (docs/serving.md); flags appended to `docker run IMAGE`
# reach `anysr serve`. docs/deploy.md covers compose, Kubernetes, Ray Serve and what was verified.
# Builds with Docker 20.10 or later, with or without BuildKit (CI builds it with Debian's 20.10).

ARG BASE_IMAGE=python:3.11-slim-bookworm
# Base of the build stage only: BASE_IMAGE itself unless a build needs something while building that
# must not ship, such as a TLS proxy's CA bundle (CI passes one). Same Python at the same path as
# BASE_IMAGE, since the virtual environment is copied across.
ARG BUILD_BASE_IMAGE=${BASE_IMAGE}

# ---- build: a virtual environment with torch and the package, nothing else ---------------------
FROM ${BUILD_BASE_IMAGE} AS build

ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG TORCH_VERSION=2.13.0

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from its own index and without its dependencies, so the choice of build is never left
# to the resolver; the package's `torch>=2.4` is then satisfied and the next step brings torch's
# dependencies from PyPI under the constraints. Its own layer: it is most of the image and changes
# far less often than the code.
RUN pip install --no-deps --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY models ./models
COPY server ./server
COPY loadtest ./loadtest
COPY cli ./cli
COPY anysr_ray ./anysr_ray
# A regular (not editable) install: the runtime image carries no source tree. pip and setuptools are
# only needed to install, so they leave the environment here, and the import check after that fails
# the build, not the first start, if a module or dependency is missing or needed them.
RUN pip install --constraint constraints.txt . \
 && pip check \
 && python3 -m pip uninstall --yes pip setuptools \
 && python3 -c "import torch, server.app, cli.main; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && anysr serve --help > /dev/null

# ---- runtime ------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="anysr-serve" \
      org.opencontainers.image.description="AnySR image super-resolution over HTTP: any scale, four compute widths" \
      org.opencontainers.image.version="0.1.0"

# tini as PID 1: it forwards SIGTERM to the server (which then drains, see STOPSIGNAL) and reaps
# zombies; Python as PID 1 would ignore SIGTERM until uvicorn had installed its handlers.
# Not version-pinned (DL3008): Debian stable drops superseded versions from its mirrors, so a pin
# would break the build at the next point release; the base image tag fixes the release.
# The base's own pip, setuptools and wheel (python:3.11-slim has them) go too: nothing installs at
# run time, and an installer in a read-only image is only attack surface.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && if python3 -m pip --version > /dev/null 2>&1; then \
        python3 -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel; \
    fi

# A fixed numeric uid so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 anysr \
 && useradd --system --uid 10001 --gid anysr --create-home --home-dir /home/anysr --shell /usr/sbin/nologin anysr

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The served weights only (not the stage-1 base the training started from). Root-owned: the server
# only reads them.
COPY weights/anysr-edsr-liif.safetensors weights/MODEL_CARD.md ./weights/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    ANYSR_HOST=0.0.0.0 \
    ANYSR_PORT=8000 \
    ANYSR_WEIGHTS=/app/weights/anysr-edsr-liif.safetensors

USER 10001:10001
EXPOSE 8000

# Healthy = ready for traffic (warmed up, not draining): what compose's service_healthy, Swarm and
# container-aware proxies act on. Nothing listens until the model is loaded and every width warmed,
# hence the start period. Every 5 s so that healthy follows ready within seconds: HEALTHCHECK's
# --start-interval would allow a slower steady rate, but Docker before 25 refuses the flag (on 25+,
# `docker run --health-start-interval 1s --health-interval 30s` does that). The probe is a bare
# interpreter (-I -S) with http.client, a few tens of ms of CPU; /readyz answers 503 while draining.
HEALTHCHECK --interval=5s --timeout=4s --start-period=180s --retries=3 \
    CMD ["python3", "-I", "-S", "-c", "import http.client as h, os; c = h.HTTPConnection('127.0.0.1', int(os.environ.get('ANYSR_PORT', '8000')), timeout=3); c.request('GET', '/readyz'); raise SystemExit(c.getresponse().status != 200)"]

# SIGTERM: /readyz turns 503, new upscales get 503 + Retry-After, in-flight requests finish for up to
# ANYSR_DRAIN_TIMEOUT_S (default 30 s), then the process exits 0. Give the container a longer grace
# period than that (docker run --stop-timeout 45 or docker stop -t 45, compose stop_grace_period,
# k8s terminationGracePeriodSeconds): Docker's default of 10 s kills requests still running.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "anysr", "serve"]
