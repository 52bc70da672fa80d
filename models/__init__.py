"""AnySR model library: architecture, FLOPs model, checkpoints, data, training and evaluation.

Imports only torch, numpy and safetensors (never fastapi, pydantic-settings, prometheus, psutil or pynvml).
"""

from models.anysr import AnySR, build_model
from models.flops import FlopsBreakdown, count_flops
from models.spec import TINY_SPEC, ModelSpec
from models.widths import WIDTHS, channels_at, width_for_scale

__all__ = [
    "WIDTHS",
    "TINY_SPEC",
    "AnySR",
    "FlopsBreakdown",
    "ModelSpec",
    "build_model",
    "channels_at",
    "count_flops",
    "width_for_scale",
]
