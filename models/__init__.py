"""AnySR model library: architecture, FLOPs model, checkpoints, data, training and evaluation.

Imports only torch, numpy and safetensors (never fastapi, pydantic-settings, prometheus, psutil or
pynvml). The names below load lazily, so ``import models.widths`` (the server's scheduler does that)
does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WIDTHS": "models.widths",
    "channels_at": "models.widths",
    "width_for_scale": "models.widths",
    "ModelSpec": "models.spec",
    "TINY_SPEC": "models.spec",
    "AnySR": "models.anysr",
    "build_model": "models.anysr",
    "FlopsBreakdown": "models.flops",
    "count_flops": "models.flops",
    "CheckpointError": "models.checkpoint",
    "load_checkpoint": "models.checkpoint",
    "save_checkpoint": "models.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
