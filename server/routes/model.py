"""``GET /v1/model``: the loaded model, how it is served, and FLOPs per width for a given request size."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query

from models.flops import count_flops
from models.widths import SCALE_GROUP_BOUNDS, WIDTHS
from server.deps import ServiceDep
from server.errors import BadRequest, quote
from server.headers import parse_number
from server.metrics import width_label

router = APIRouter(tags=["model"])

#: Up to 7 digits a side, no leading zero: far past any limit, and short enough that parsing can never be
#: the problem. The OpenAPI document states the same pattern.
SIZE_PATTERN = r"^([1-9][0-9]{0,6})[xX]([1-9][0-9]{0,6})$"
_SIZE = re.compile(SIZE_PATTERN)

UNTRAINED_WARNING = "UNTRAINED: randomly initialised weights (--allow-untrained); outputs are not super-resolved"


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` (LR height by width, in pixels) → (h, w); 400 if malformed."""
    match = _SIZE.match(text)
    if match is None:
        raise BadRequest("invalid_size", f"size must look like 256x256 (height x width, positive), got {quote(text)}")
    return int(match[1]), int(match[2])


@router.get("/v1/model", summary="Describe the model and FLOPs per width")
async def describe_model(
    service: ServiceDep,
    size: Annotated[str, Query()] = "256x256",
    scale: Annotated[str, Query()] = "2",
) -> dict[str, Any]:
    lr_size = parse_size(size)
    scale_value = parse_number("scale", scale)
    out_size = service.output_size(lr_size, scale_value, scale_value)
    plan = service.plan(lr_size, out_size)
    info = service.model_info
    group_widths = [{"max_scale": bound, "width": width} for bound, width in zip(SCALE_GROUP_BOUNDS, WIDTHS)]
    group_widths.append({"max_scale": None, "width": WIDTHS[len(SCALE_GROUP_BOUNDS)]})
    per_width = {}
    for width in service.policy.widths:
        breakdown = count_flops(service.spec, lr_size, out_size, width)
        per_width[width_label(width)] = {
            "flops": plan.flops(service.spec, width),
            "flops_whole_image": breakdown.total,
            "encoder_flops_whole_image": breakdown.encoder,
            "decoder_flops_whole_image": breakdown.decoder,
        }
    rates = service.throughput.flops_per_s()
    return {
        "name": "anysr-edsr-liif",
        "untrained": info.untrained,
        "warning": UNTRAINED_WARNING if info.untrained else None,
        "source": info.path,
        "sha256": info.sha256,
        "parameters": info.parameters,
        "spec": dataclasses.asdict(info.spec),
        "training": info.training,
        "widths": list(WIDTHS),
        "served_widths": list(service.policy.widths),
        "scale_groups": group_widths,
        "scale_range": {"min_exclusive": service.scale_limits.min_scale, "max": service.scale_limits.max_scale},
        "policy": {
            "mode": service.policy.mode,
            "fixed_width": service.policy.fixed_width,
        },
        "device": service.device,
        "precision": service.precision,
        "tiling": {"tile_size": service.tiles.tile_size, "halo": service.tiles.halo},
        "throughput_flops_per_s": {width_label(width): rate for width, rate in sorted(rates.items())},
        "flops": {
            "input_size": list(lr_size),
            "output_size": list(out_size),
            "tiles": plan.count,
            "per_width": per_width,
        },
    }
