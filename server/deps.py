"""What route handlers need, as ``Annotated`` dependency aliases (handlers state their needs by type).

Everything lives on ``app.state``, put there by ``create_app`` (settings-derived values, metrics,
lifecycle) or by the lifespan (the service, once the model is warm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from server.codec import DecodeLimits
from server.errors import Unavailable
from server.headers import SINGLE_HEADERS, check_not_repeated
from server.lifecycle import Lifecycle
from server.metrics import ServerMetrics
from server.service import UpscaleService


@dataclass(frozen=True)
class RequestLimits:
    """Per-request limits and defaults the upscale route applies (from settings)."""

    decode: DecodeLimits
    output_formats: tuple[str, ...]
    default_quality: int
    png_compress_level: int
    max_body_bytes: int
    request_timeout_s: float
    #: RGB in [0, 1] that transparent images are composited onto for JPEG output.
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)


def get_service(request: Request) -> UpscaleService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise Unavailable("not_ready", "server is starting up; retry shortly", retry_after_s=1)
    return service


def get_lifecycle(request: Request) -> Lifecycle:
    return request.app.state.lifecycle


def get_metrics(request: Request) -> ServerMetrics:
    return request.app.state.metrics


def get_limits(request: Request) -> RequestLimits:
    return request.app.state.request_limits


ServiceDep = Annotated[UpscaleService, Depends(get_service)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
MetricsDep = Annotated[ServerMetrics, Depends(get_metrics)]
LimitsDep = Annotated[RequestLimits, Depends(get_limits)]


def reject_repeats(request: Request) -> None:
    """App-wide dependency: a repeated query parameter or single-valued header is a 400 (before any
    parameter is read)."""
    extra = tuple(getattr(request.app.state, "single_headers", ()))
    check_not_repeated(request.query_params.multi_items(), request.headers.raw, SINGLE_HEADERS + extra)
