"""AnySR model library: registered parts, the composed model, FLOPs, checkpoints, training and evaluation.

Layout:

- the contract and shared machinery: :mod:`models.parts` (what an encoder and a decoder must answer),
  :mod:`models.registry` (parts by name), :mod:`models.spec` (nested specs), :mod:`models.slicing` and
  :mod:`models.ase` (width prefixes, any-scale enhancement), :mod:`models.widths` (width sets and the
  scale → width policy), :mod:`models.geometry` (the output-size rule), :mod:`models.flops`,
  :mod:`models.prefix`, :mod:`models.checkpoint`, :mod:`models.devices`;
- the parts: :mod:`models.encoders` (backbones) and :mod:`models.decoders` (upsamplers), one module each;
- the model: :mod:`models.anysr`;
- :mod:`models.training` and :mod:`models.evaluation`.

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
    "output_size": "models.geometry",
    "ModelSpec": "models.spec",
    "PartSpec": "models.spec",
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
