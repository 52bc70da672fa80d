"""``GET /v1/model``: the loaded model, how it is served, and FLOPs per width for a given request size."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from models.flops import count_flops
from models.widths import SCALE_GROUP_BOUNDS, group_width
from server.deps import LimitsDep, ServiceDep
from server.errors import BadRequest, quote
from server.headers import parse_number
from server.metrics import width_label
from server.routes.upscale import resolve_scales

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
    request: Request,
    service: ServiceDep,
    limits: LimitsDep,
    size: Annotated[str, Query()] = "256x256",
    scale: Annotated[str, Query()] = "2",
    scale_h: Annotated[str | None, Query()] = None,
    scale_w: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """Parameters arrive as text and are parsed strictly, as for ``POST /upscale`` (server/openapi.py states
    the grammar); ``scale_h``/``scale_w`` override ``scale`` per axis."""
    lr_size = parse_size(size)
    scales = resolve_scales(
        *(
            None if value is None else parse_number(name, value)
            for name, value in (("scale", scale), ("scale_h", scale_h), ("scale_w", scale_w))
        )
    )
    out_size = service.output_size(lr_size, *scales, serving=False)
    plan = service.plan(lr_size, out_size)
    info = service.model_info
    model = service.model
    bounds: list[float | None] = [*SCALE_GROUP_BOUNDS, None]
    group_widths = [
        {"max_scale": bound, "width": group_width(index, model.widths)} for index, bound in enumerate(bounds)
    ]
    per_width = {}
    for width in service.policy.widths:
        breakdown = count_flops(model, lr_size, out_size, width)
        per_width[width_label(width)] = {
            "flops": plan.flops(model, width),
            "flops_whole_image": breakdown.total,
            "encoder_flops_whole_image": breakdown.encoder,
            "decoder_flops_whole_image": breakdown.decoder,
        }
    rates = service.throughput.flops_per_s()
    return {
        "name": f"anysr-{info.spec.encoder.name}-{info.spec.decoder.name}",
        "parts": {
            "encoder": info.spec.encoder.name,
            "decoder": info.spec.decoder.name,
            "global_decoder": model.is_global,
            "receptive_radius": model.receptive_radius,
        },
        "untrained": info.untrained,
        "warning": UNTRAINED_WARNING if info.untrained else None,
        "source": info.path,
        "sha256": info.sha256,
        "parameters": info.parameters,
        "spec": info.spec.to_dict(),
        "training": info.training,
        "widths": list(model.widths),
        "served_widths": list(service.policy.widths),
        "scale_groups": group_widths,
        "scale_range": {"min_exclusive": service.scale_limits.min_scale, "max": service.scale_limits.max_scale},
        "limits": {
            "max_body_bytes": limits.max_body_bytes,
            "max_input_pixels": limits.decode.max_input_pixels,
            "max_output_pixels": service.scale_limits.max_output_pixels,
            "input_formats": list(limits.decode.formats),
            "output_formats": list(limits.output_formats),
            "default_quality": limits.default_quality,
            "request_timeout_s": limits.request_timeout_s,
        },
        "policy": {
            "mode": service.policy.mode,
            "fixed_width": service.policy.fixed_width,
        },
        "device": service.device,
        # Whether calls need an API key, and in which header (the try-it page shows its key field from this).
        "auth": {"required": request.app.state.access.keys.enabled, "header": request.app.state.access.key_header},
        "precision": service.precision,
        "precision_reason": service.precision_reason,
        "tiling": {
            "whole_image": service.tiles.whole_image,
            "tile_size": service.tiles.tile_size,
            "halo": service.tiles.halo,
            "alignment": service.tiles.alignment,
        },
        "throughput_flops_per_s": {width_label(width): rate for width, rate in sorted(rates.items())},
        "flops": {
            "input_size": list(lr_size),
            "output_size": list(out_size),
            "servable": service.fits_whole_image(out_size),
            "tiles": plan.count,
            "per_width": per_width,
        },
    }
