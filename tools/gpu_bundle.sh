#!/usr/bin/env bash
# Prepare what `python3 -m benchmarks.gpu` needs on the device machine, which reaches no network and does
# not get ../shared: Set5 and Set14, and wheels of the server's packages its image lacks (the device
# README's package list: it has torch, numpy, httpx, pillow, psutil, pyyaml, prometheus-client,
# nvidia-ml-py, matplotlib, but no fastapi, uvicorn or pydantic). Run here, in the repository root;
# everything goes to .gpu-bundle/ (git-ignored through info/exclude), which a device `run` carries.
# docs/gpu-benchmark.md has the device command.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=.gpu-bundle
shared=${ANYSR_SHARED_DIR:-../shared}
python=${PYTHON:-.venv/bin/python}

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF "/$bundle/" "$exclude" 2>/dev/null || echo "/$bundle/" >>"$exclude"
rm -rf "$bundle"
mkdir -p "$bundle/datasets" "$bundle/whl"
cp -r "$shared/datasets/Set5" "$shared/datasets/Set14" "$bundle/datasets/"

# Pinned to the versions this checkout's virtual environment runs, so the device runs what CI tests.
packages=(fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv annotated-types
    annotated-doc typing-inspection typing-extensions uvicorn python-multipart)
pins=()
for name in "${packages[@]}"; do
    pins+=("$name==$("$python" -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$name")")
done
# The device image's python3 is 3.12 on x86-64 Linux.
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$bundle/whl" "${pins[@]}"
ls "$bundle/whl"
du -sh "$bundle"
