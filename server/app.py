"""``create_app``: build the FastAPI app; the lifespan loads, warms, starts and later drains everything.

Nothing runs at import. ``create_app(settings)`` builds the cheap parts (metrics registry, lifecycle,
limits, routes, middleware) and stores them on ``app.state``; the lifespan loads the model, warms
every served width (seeding the throughput estimates), starts the batcher and the load sampler,
then marks the app ready. On shutdown it refuses new work, waits for in-flight requests (up to the
drain timeout), drains the batcher and stops the sampler.

Tests inject a model (or a whole runner) instead of a weights file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import torch
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from models.anysr import AnySR
from server.access import AccessMiddleware, AccessPolicy, ApiKeys, read_keys_file
from server.batcher import Batcher, BatchLimits
from server.codec import DecodeLimits
from server.deps import RequestLimits, reject_repeats
from server.errors import install_error_handlers
from server.jobs import TileJob
from server.lifecycle import Lifecycle
from server.load import CpuProbe, GpuProbe, GpuReading, LoadSampler
from server.metrics import ServerMetrics, width_label
from server.middleware import RequestIdMiddleware, UpscaleGuardMiddleware
from server.model_source import injected_info, load_model
from server.openapi import build_openapi
from server.routes import api_router
from server.runner import ModelRunner, RunnerConfig
from server.scheduler import SchedulerPolicy, parse_policy
from server.service import ModelInfo, ScaleLimits, TileConfig, UpscaleService
from server.settings import Settings
from server.throughput import ThroughputTracker

logger = logging.getLogger("anysr.server")


class Runner(Protocol):
    """What the app needs from a model runner (``ModelRunner``, or a test double wrapping one)."""

    model: AnySR
    device: torch.device
    precision: str
    precision_reason: str

    def run_batch(self, jobs: list[TileJob]) -> list[torch.Tensor]: ...

    def warm_up(self, widths: tuple[float, ...], lr_size: int, scale: float = 2.0) -> dict[float, float]: ...


def served_widths(settings: Settings, model_widths: tuple[float, ...]) -> tuple[float, ...]:
    """The widths the scheduler may choose: ``settings.widths`` (each one of the model's), else all the model's."""
    if settings.widths is None:
        return model_widths
    chosen = []
    for width in settings.widths:
        matches = [own for own in model_widths if abs(own - width) < 1e-9]
        if not matches:
            raise ValueError(f"served width {width} is not one of this model's widths {model_widths}")
        chosen.append(matches[0])
    return tuple(chosen)


def scheduler_policy(settings: Settings, model_widths: tuple[float, ...]) -> SchedulerPolicy:
    """The scheduler's policy for a model with ``model_widths`` (raises ``ValueError`` on a mismatch)."""
    mode, fixed = parse_policy(settings.policy)
    if fixed is not None:
        fixed = next((own for own in model_widths if abs(own - fixed) < 1e-9), fixed)
    return SchedulerPolicy(
        mode=mode,
        fixed_width=fixed,
        widths=served_widths(settings, model_widths),
        model_widths=model_widths,
        moderate_utilisation=settings.moderate_utilisation,
        heavy_utilisation=settings.heavy_utilisation,
        moderate_queue_s=settings.moderate_queue_s,
        heavy_queue_s=settings.heavy_queue_s,
        overload_queue_s=settings.overload_queue_s,
        min_gpu_free_bytes=settings.min_gpu_free_bytes,
        hysteresis=settings.hysteresis,
        max_queue_s=settings.max_queue_s,
    )


#: Default tiles per batch by device type. On a 2-core CPU batches of 2-8 tiles ran at 0.95-1.00x the
#: throughput of single tiles (docs/benchmarks.md, `batching`) while each extra tile of a large request
#: holds 80 MiB or more of activations; a GPU needs batches to fill its cores.
DEFAULT_BATCH_TILES = {"cuda": 8, "cpu": 1}


def batch_limits(settings: Settings, device_type: str) -> BatchLimits:
    tiles = settings.max_batch_tiles or DEFAULT_BATCH_TILES.get(device_type, 8)
    return BatchLimits(
        max_tiles=tiles,
        max_pixels=settings.max_batch_pixels,
        max_wait_s=settings.max_batch_wait_ms / 1e3,
        max_queue_tiles=settings.max_queue_tiles,
    )


def request_limits(settings: Settings) -> RequestLimits:
    return RequestLimits(
        decode=DecodeLimits(formats=settings.input_formats, max_input_pixels=settings.max_input_pixels),
        output_formats=settings.output_formats,
        default_quality=settings.default_quality,
        png_compress_level=settings.png_compress_level,
        max_body_bytes=settings.max_body_bytes,
        request_timeout_s=settings.request_timeout_s,
        background=settings.background_rgb(),
    )


def access_policy(settings: Settings) -> AccessPolicy:
    keys = list(settings.api_keys)
    if settings.api_keys_file is not None:
        keys += read_keys_file(settings.api_keys_file)
    return AccessPolicy(
        keys=ApiKeys.from_keys(keys),
        key_header=settings.api_key_header,
        public_admin=settings.public_admin,
        admin_port=settings.admin_port,
    )


#: Response headers a browser client may read when CORS is on.
EXPOSED_HEADERS = [
    "X-AnySR-Width",
    "X-AnySR-FLOPs",
    "X-AnySR-Reason",
    "X-AnySR-Tiles",
    "X-Request-ID",
    "Server-Timing",
    "Retry-After",
]


def runner_config(settings: Settings) -> RunnerConfig:
    return RunnerConfig(
        device=settings.device,
        precision=settings.precision,
        query_chunk=settings.query_chunk,
        torch_threads=settings.torch_threads,
    )


async def _build_runner(
    settings: Settings, model: AnySR | None, runner: Runner | None, model_info: ModelInfo | None
) -> tuple[Runner, ModelInfo]:
    if runner is not None:
        return runner, model_info or ModelInfo(
            spec=runner.model.spec, parameters=0, sha256=None, path="<injected>", untrained=False
        )
    if model is None:
        model, loaded_info = await asyncio.to_thread(load_model, settings.weights, settings.allow_untrained)
        model_info = model_info or loaded_info
    built = ModelRunner(model, runner_config(settings))
    return built, model_info or injected_info(model)


def create_app(
    settings: Settings | None = None,
    *,
    model: AnySR | None = None,
    runner: Runner | None = None,
    model_info: ModelInfo | None = None,
    gpu_probe: GpuReading | None = None,
) -> FastAPI:
    """Build the app. Give ``model`` (or ``runner``) to skip loading ``settings.weights``."""
    settings = settings or Settings()
    metrics = ServerMetrics()
    lifecycle = Lifecycle(settings.max_requests_per_client, settings.max_requests_per_key)
    access = access_policy(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served, info = await _build_runner(settings, model, runner, model_info)
        policy = scheduler_policy(settings, served.model.widths)
        metrics.declare_widths(served.model.widths)
        halo = settings.tile_halo if settings.tile_halo is not None else served.model.receptive_radius
        throughput = ThroughputTracker(settings.throughput_smoothing)
        rates = await asyncio.to_thread(served.warm_up, policy.widths, settings.warmup_size)
        for width, rate in rates.items():
            throughput.seed(width, rate)
            metrics.throughput.labels(width=width_label(width)).set(rate)
        batcher = Batcher(
            served.run_batch,
            batch_limits(settings, served.device.type),
            metrics,
            throughput,
            fair=settings.queue_order == "fair",
        )
        batcher.start()
        lifecycle.on_drain_expired(lambda: batcher.close(timeout_s=0.0))
        probe = gpu_probe
        if probe is None and served.device.type == "cuda":
            probe = GpuProbe(served.device.index or 0)
        sampler = LoadSampler(
            CpuProbe(), probe, batcher, throughput, metrics, settings.load_sample_interval_s, settings.load_smoothing
        )
        sampler.sample()
        sampler.start()
        app.state.service = UpscaleService(
            model=served.model,
            model_info=info,
            policy=policy,
            scale_limits=ScaleLimits(
                settings.min_scale, settings.max_scale, settings.max_output_pixels, settings.max_whole_image_pixels
            ),
            tiles=TileConfig(settings.tile_size, halo, served.model.alignment, served.model.is_global),
            batcher=batcher,
            sampler=sampler,
            throughput=throughput,
            metrics=metrics,
            device=str(served.device),
            precision=served.precision,
            precision_reason=served.precision_reason,
        )
        lifecycle.mark_ready()
        metrics.ready.set(1)
        logger.info(
            "ready: model %s, device %s, precision %s (%s), policy %s, widths %s, %s%s",
            served.model.spec.label,
            served.device,
            served.precision,
            served.precision_reason,
            settings.policy,
            policy.widths,
            "whole images (global decoder)" if served.model.is_global else f"tile {settings.tile_size} + halo {halo}",
            " [UNTRAINED MODEL]" if info.untrained else "",
        )
        try:
            yield
        finally:
            lifecycle.begin_drain(settings.drain_timeout_s)  # keeps the deadline a SIGTERM already set
            metrics.ready.set(0)
            if not await lifecycle.wait_idle(lifecycle.drain_time_left() or 0.0):
                logger.error("shutting down with %d requests still in flight", lifecycle.in_flight)
            await batcher.close(timeout_s=lifecycle.drain_time_left() or 0.0)
            await sampler.stop()
            app.state.service = None

    app = FastAPI(
        title="AnySR Serve",
        summary="Any-scale, any-resource image super-resolution.",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(reject_repeats)],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.lifecycle = lifecycle
    app.state.request_limits = request_limits(settings)
    app.state.access = access
    app.state.single_headers = (settings.api_key_header.lower(),)
    app.state.service = None
    install_error_handlers(app)
    # Added innermost first: the request id wraps everything, so even a 413 from the guard carries it;
    # CORS wraps the access check, so preflights pass and refusals carry CORS headers; the guard counts 401s.
    app.add_middleware(AccessMiddleware, policy=access)
    app.add_middleware(
        UpscaleGuardMiddleware,
        path="/upscale",
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        body_timeout_s=settings.body_timeout_s,
        drain_expired=lifecycle.drain_expired,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Accept", "X-AnySR-Budget", "X-AnySR-Deadline-Ms", "X-Request-ID"]
            + [settings.api_key_header],
            expose_headers=EXPOSED_HEADERS,
        )
    app.add_middleware(RequestIdMiddleware)
    app.include_router(api_router)
    app.openapi = lambda: build_openapi(app, settings)  # type: ignore[method-assign]
    return app
