# AnySR Serve: one shared-weight AnySR model behind `anysr serve`, one process per device.
#
#   docker build -t anysr-serve:cuda .                                    # GPU hosts (default)
#   docker build -t anysr-serve:cpu \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .  # CPU-only hosts
#   docker run --gpus 1 -p 8000:8000 anysr-serve:cuda
#
# TORCH_INDEX_URL picks the torch build and is used for torch alone: PyPI's Linux x86_64 wheel is the
# CUDA build (its CUDA libraries come as nvidia-* wheels, so a slim base works and the host needs only
# the NVIDIA driver and container toolkit); download.pytorch.org/whl/cpu is the CPU build, several
# times smaller; download.pytorch.org/whl/cuXYZ pins a CUDA release. The rest comes from PyPI.
# Settings are ANYSR_* environment variables (docs/serving.md); flags appended to `docker run IMAGE`
# reach `anysr serve`. docs/deploy.md covers compose, Kubernetes and what was verified.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with torch and the package, nothing else ---------------------
FROM ${BASE_IMAGE} AS build

ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG TORCH_VERSION=2.13.0

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first and on its own index, so the choice of build is never left to the resolver; the
# package's own `torch>=2.4` is then already satisfied. Its own layer: it is most of the image and
# changes far less often than the code.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY server ./server
COPY loadtest ./loadtest
COPY cli ./cli
# A regular (not editable) install: the runtime image carries no source tree. The import check
# fails the build here, not at first start, if a module or dependency is missing.
RUN pip install . \
 && python3 -c "import torch, server.app, cli.main; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && anysr serve --help > /dev/null

# ---- runtime ------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ARG TORCH_INDEX_URL=https://pypi.org/simple
LABEL org.opencontainers.image.title="anysr-serve" \
      org.opencontainers.image.description="AnySR image super-resolution over HTTP: any scale, four compute widths" \
      org.opencontainers.image.version="0.1.0" \
      io.anysr.torch-index="${TORCH_INDEX_URL}"

# tini as PID 1: it forwards SIGTERM to the server (which then drains, see STOPSIGNAL) and reaps
# zombies; Python as PID 1 would ignore SIGTERM until uvicorn had installed its handlers.
# Not version-pinned (DL3008): Debian stable drops superseded versions from its mirrors, so a pin
# would break the build at the next point release; the base image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 anysr \
 && useradd --system --uid 10001 --gid anysr --create-home --home-dir /home/anysr --shell /usr/sbin/nologin anysr

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Weights and code stay root-owned: the server only reads them.
COPY weights/ ./weights/

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
# hence the start period. urllib raises on the 503 that /readyz answers while draining.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ANYSR_PORT', '8000'), timeout=4)"]

# SIGTERM: /readyz turns 503, new upscales get 503 + Retry-After, in-flight requests finish for up to
# ANYSR_DRAIN_TIMEOUT_S (default 30 s), then the process exits 0. Give the container a longer grace
# period than that (docker stop -t, compose stop_grace_period, k8s terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "anysr", "serve"]
