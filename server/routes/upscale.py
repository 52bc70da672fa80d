"""``POST /upscale``: decode → validate → plan → decide → batch → infer → stitch → encode.

The body is the raw image (``Content-Type: image/png|jpeg|webp``) or a multipart form with a file
field ``image`` (or ``file``), read by ``server/upload.py``. The answer is the image (its format from
``format`` or ``Accept``) with headers stating the width, the reason, the FLOPs run and a
``Server-Timing`` breakdown, or (``Accept: application/json``) the same facts as JSON with the image
base64-encoded.
"""

from __future__ import annotations

import base64
import math
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from models.flops import count_flops
from server.codec import MEDIA_TYPES, EncodeOptions, check_output_options, decode_image, encode_image
from server.deps import LifecycleDep, LimitsDep, ServiceDep
from server.errors import BadRequest, GatewayTimeout
from server.headers import (
    parse_boolean,
    parse_budget,
    parse_deadline_s,
    parse_integer,
    parse_number,
    server_timing,
)
from server.metrics import width_label
from server.negotiation import negotiate
from server.scheduler import WidthRequest
from server.service import wait_for_tiles
from server.upload import read_image_body

router = APIRouter(tags=["upscale"])


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client disconnects (call only after the body has been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def resolve_scales(scale: float | None, scale_h: float | None, scale_w: float | None) -> tuple[float, float]:
    """(s_h, s_w) from ``scale`` and/or the per-axis overrides; 400 if an axis has none."""
    scale_h = scale if scale_h is None else scale_h
    scale_w = scale if scale_w is None else scale_w
    if scale_h is None or scale_w is None:
        raise BadRequest("missing_scale", "give 'scale' (e.g. scale=2.3), or both 'scale_h' and 'scale_w'")
    return scale_h, scale_w


@router.post("/upscale", summary="Upscale an image by any scale")
async def upscale(
    request: Request,
    service: ServiceDep,
    lifecycle: LifecycleDep,
    limits: LimitsDep,
    scale: Annotated[str | None, Query()] = None,
    scale_h: Annotated[str | None, Query()] = None,
    scale_w: Annotated[str | None, Query()] = None,
    output_format: Annotated[str | None, Query(alias="format")] = None,
    quality: Annotated[str | None, Query()] = None,
    keep_exif: Annotated[str | None, Query()] = None,
    x_anysr_budget: Annotated[str | None, Header()] = None,
    x_anysr_deadline_ms: Annotated[str | None, Header()] = None,
) -> Response:
    """Parameters arrive as text and are parsed here, strictly (``server/headers.py``); the OpenAPI document
    (``server/openapi.py``) states the same grammar and bounds."""
    started = time.perf_counter()
    request_id: str = request.state.request_id
    budget = parse_budget(x_anysr_budget, service.model.widths)
    deadline_s = parse_deadline_s(x_anysr_deadline_ms)
    scale_h, scale_w = resolve_scales(
        *(
            None if value is None else parse_number(name, value)
            for name, value in (("scale", scale), ("scale_h", scale_h), ("scale_w", scale_w))
        )
    )
    quality_value = None if quality is None else parse_integer("quality", quality)
    keep = False if keep_exif is None else parse_boolean("keep_exif", keep_exif)
    if output_format is not None:
        check_output_options(output_format, quality_value, limits.output_formats, limits.default_quality)
    answer = negotiate(request.headers.get("accept"), output_format, limits.output_formats)
    check_output_options(answer.format, quality_value, limits.output_formats, limits.default_quality)
    client = request.client.host if request.client else "unknown"

    with lifecycle.admit(client, getattr(request.state, "api_key_id", None)):
        service.metrics.in_flight.inc()
        try:
            body = await read_image_body(request, limits.decode.formats, limits.max_body_bytes)
            decode_started = time.perf_counter()
            image = await run_in_threadpool(decode_image, body, limits.decode)  # decode
            decode_s = time.perf_counter() - decode_started
            out_size = service.output_size(image.size, scale_h, scale_w)  # validate
            plan = service.plan(image.size, out_size)  # plan
            elapsed_s = time.perf_counter() - started
            decision = service.decide(  # decide and admit
                WidthRequest(
                    scale_h,
                    scale_w,
                    service.flops_table(plan),
                    budget.width,
                    budget.flops,
                    deadline_s=deadline_s,
                    timeout_s=limits.request_timeout_s,
                    tiles=plan.count,
                    elapsed_s=elapsed_s,
                )
            )
            jobs, futures, canvas = service.make_jobs(image, plan, decision.width, request_id)
            limit_s = min(limits.request_timeout_s, deadline_s or math.inf)
            service.submit(jobs, deadline_at_s=started + limit_s)  # batch
            submitted = time.perf_counter()
            try:
                results = await wait_for_tiles(  # infer
                    futures, limit_s - (submitted - started), wait_for_disconnect(request)
                )
            except GatewayTimeout:
                service.record_device_time(decision, time.perf_counter() - submitted)
                raise
            encode_started = time.perf_counter()
            outcome = service.collect(canvas, results, submitted, encode_started)  # stitched as tiles finished
            options = EncodeOptions(
                format=answer.format,
                quality=quality_value if quality_value is not None else limits.default_quality,
                png_compress_level=limits.png_compress_level,
                keep_exif=keep,
                background=limits.background,
            )
            encoded = await run_in_threadpool(encode_image, outcome.pixels, image, options)  # encode
            encode_s = time.perf_counter() - encode_started
        finally:
            service.metrics.in_flight.dec()

    total_s = time.perf_counter() - started
    service.record_success(decision, total_s, outcome)
    headers = {
        "X-AnySR-Width": width_label(decision.width),
        "X-AnySR-FLOPs": str(decision.flops),
        "X-AnySR-Reason": decision.reason,
        "X-AnySR-Tiles": str(plan.count),
        "Vary": "Accept",
        "Server-Timing": server_timing(
            queue=outcome.queue_s, decode=decode_s, compute=outcome.compute_s, encode=encode_s, total=total_s
        ),
    }
    if not answer.json:
        return Response(encoded, media_type=MEDIA_TYPES[answer.format], headers=headers)
    whole = count_flops(service.model, image.size, out_size, decision.width).total
    return JSONResponse(
        {
            "request_id": request_id,
            "width": decision.width,
            "reason": decision.reason,
            "flops": decision.flops,
            "flops_whole_image": whole,
            "load_level": decision.load_level,
            "scale": [out_size[0] / image.size[0], out_size[1] / image.size[1]],
            "input_size": list(image.size),
            "output_size": list(out_size),
            "tiles": plan.count,
            "format": answer.format,
            "media_type": MEDIA_TYPES[answer.format],
            "timing_ms": {
                "queue": outcome.queue_s * 1e3,
                "decode": decode_s * 1e3,
                "compute": outcome.compute_s * 1e3,
                "encode": encode_s * 1e3,
                "total": total_s * 1e3,
            },
            "image_base64": base64.b64encode(encoded).decode("ascii"),
        },
        headers=headers,
    )
