"""The model library stays a library: importing any of models/ pulls in no server or monitoring package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Packages that belong to the server side (web stack, metrics, load probes).
SERVER_ONLY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic_settings",
    "server",
    "prometheus_client",
    "psutil",
    "pynvml",
)

# Runs in a fresh interpreter. torch itself imports pynvml when it is installed (torch.cuda probes NVML),
# so whatever torch, numpy and safetensors load is the baseline; models/ must add nothing on top of it.
PROBE = """
import importlib, json, pkgutil, sys
forbidden = set(sys.argv[1].split(","))
def loaded():
    return sorted({name.split(".")[0] for name in sys.modules} & forbidden)
import numpy, safetensors.torch, torch
baseline = loaded()
import models
modules = sorted(info.name for info in pkgutil.walk_packages(models.__path__, "models."))
for name in modules:
    importlib.import_module(name)
print(json.dumps({"baseline": baseline, "after": loaded(), "modules": modules}))
"""


def test_importing_every_models_module_loads_no_server_package() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(SERVER_ONLY)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"models.anysr", "models.checkpoint", "models.decoders.liif_reference", "models.flops"} <= set(
        report["modules"]
    )
    added = sorted(set(report["after"]) - set(report["baseline"]))
    assert added == [], f"models imported {added}"
    # Packages torch never loads must not be there at all.
    assert not set(report["after"]) & {"fastapi", "starlette", "uvicorn", "server", "prometheus_client", "psutil"}
