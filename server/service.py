"""The upscale service: what the routes call, one method per pipeline step.

``validate → plan → decide → submit/await (tiles land in the output canvas) → collect``; decoding and
encoding live in ``codec.py``.
One instance per app, built in the lifespan and stored on ``app.state``. It wires the scheduler
(pure), the batcher (queue + inference thread), the load sampler and the metrics together, and
keeps the previous decision for the scheduler's hysteresis. No HTTP types here except the errors.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import torch

from models.anysr import AnySR
from models.geometry import output_size
from models.spec import ModelSpec
from server.batcher import Batcher, BatcherClosed, QueueFull
from server.codec import DecodedImage
from server.errors import ClientClosedRequest, GatewayTimeout, Unavailable, Unprocessable
from server.jobs import BatchKey, TileJob, TileResult
from server.load import LoadSampler
from server.metrics import ServerMetrics, width_label
from server.scheduler import (
    BudgetTooSmall,
    DeadlineUnreachable,
    QueueTooLong,
    RequestTooCostly,
    SchedulerPolicy,
    WidthDecision,
    WidthRequest,
    choose_width,
    queued_work_s,
)
from server.throughput import ThroughputTracker
from server.tiling import TilePlan, crop_window, new_canvas, plan_tiles, tile_query, tile_region

logger = logging.getLogger("anysr.server.service")


@dataclass(frozen=True)
class ModelInfo:
    """What /v1/model reports about the loaded model."""

    spec: ModelSpec
    parameters: int
    #: SHA-256 of the weights file, or None for an untrained model.
    sha256: str | None
    path: str | None
    untrained: bool
    training: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScaleLimits:
    """Allowed scales (min exclusive, max inclusive) and output size."""

    min_scale: float = 1.0
    max_scale: float = 8.0
    max_output_pixels: int = 4096 * 4096
    #: Output cap of a model that runs whole-image (a global decoder): it cannot be tiled.
    max_whole_image_pixels: int = 2048 * 2048


@dataclass(frozen=True)
class TileConfig:
    """How requests are cut: LR tile side, halo (overlap per side), window alignment, or not at all."""

    tile_size: int
    halo: int
    #: Window starts are multiples of this (the model's alignment).
    alignment: int = 1
    #: Run every request as one whole-image tile (a model whose decoder is global).
    whole_image: bool = False


@dataclass(frozen=True)
class Outcome:
    """A finished upscale before encoding."""

    pixels: torch.Tensor  # (H, W, 3) uint8, or float32 for an exact image
    queue_s: float
    compute_s: float


async def wait_for_tiles(
    futures: list[asyncio.Future[TileResult]], timeout_s: float, disconnected: Awaitable[None]
) -> list[TileResult]:
    """Await every tile, or give up on timeout (504) or client disconnect (499), dropping queued tiles.

    Giving up cancels the tiles' futures, which is how the batcher learns to drop them. A failed tile
    fails the request at once (its siblings are dropped) with that tile's error.
    """
    tiles = asyncio.ensure_future(asyncio.wait(futures, return_when=asyncio.FIRST_EXCEPTION))
    watcher = asyncio.ensure_future(disconnected)
    try:
        done, _ = await asyncio.wait({tiles, watcher}, timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        tiles.cancel()  # stops the inner wait only; the futures themselves are handled below
    completed = all(future.done() for future in futures)
    failure: BaseException | None = None
    for future in futures:
        if future.done() and not future.cancelled():
            error = future.exception()  # retrieving every error keeps asyncio from logging the others
            failure = failure or error
        future.cancel()  # no-op for finished tiles; drops the queued ones
    if failure is not None:
        if isinstance(failure, BatcherClosed):
            raise Unavailable("draining", str(failure), retry_after_s=1) from None
        raise failure
    if completed:
        return [future.result() for future in futures]
    if watcher in done and not watcher.cancelled():
        raise ClientClosedRequest("client_closed", "client disconnected before the result was ready")
    raise GatewayTimeout(
        "timeout", f"request did not finish within {timeout_s:.3f} s; its remaining tiles were dropped"
    )


class UpscaleService:
    """Validation, planning, scheduling and batching for one model on one device."""

    def __init__(
        self,
        model: AnySR,
        model_info: ModelInfo,
        policy: SchedulerPolicy,
        scale_limits: ScaleLimits,
        tiles: TileConfig,
        batcher: Batcher,
        sampler: LoadSampler,
        throughput: ThroughputTracker,
        metrics: ServerMetrics,
        device: str = "cpu",
        precision: str = "fp32",
        precision_reason: str = "",
    ) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        self.precision_reason = precision_reason
        self.model_info = model_info
        self.policy = policy
        self.scale_limits = scale_limits
        self.tiles = tiles
        self.batcher = batcher
        self.sampler = sampler
        self.throughput = throughput
        self.metrics = metrics
        self._previous: WidthDecision | None = None

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    # -- validate --------------------------------------------------------------------------------

    def output_size(
        self, lr_size: tuple[int, int], scale_h: float, scale_w: float, serving: bool = True
    ) -> tuple[int, int]:
        """(H, W) = round(h·s_h), round(w·s_w); 422 if a scale or the output size is out of range.

        ``serving=False`` (describing costs, not running them) skips the whole-image cap of a global model.
        """
        limits = self.scale_limits
        for name, value in (("scale_h", scale_h), ("scale_w", scale_w)):
            if not math.isfinite(value) or not limits.min_scale < value <= limits.max_scale:
                raise Unprocessable(
                    "scale_out_of_range",
                    f"{name} must be greater than {limits.min_scale} and at most {limits.max_scale}, got {value}",
                )
        out = output_size(lr_size, (scale_h, scale_w))
        for name, lr_side, out_side in (("scale_h", lr_size[0], out[0]), ("scale_w", lr_size[1], out[1])):
            if out_side / lr_side <= limits.min_scale:  # rounding can undo a scale just above the minimum
                raise Unprocessable(
                    "scale_out_of_range",
                    f"{name} gives {out_side} pixels from {lr_side} after rounding, an effective scale of "
                    f"{out_side / lr_side:.4g}; it must be greater than {limits.min_scale}",
                )
        if out[0] * out[1] > limits.max_output_pixels:
            raise Unprocessable(
                "output_too_large",
                f"output would be {out[1]}x{out[0]} = {out[0] * out[1]} pixels; at most "
                f"{limits.max_output_pixels} are allowed (lower the scale or send a smaller image)",
            )
        if serving and not self.fits_whole_image(out):
            raise Unprocessable(
                "output_too_large",
                f"output would be {out[1]}x{out[0]} = {out[0] * out[1]} pixels; this model's decoder is global "
                f"(it runs whole images, not tiles), so at most {limits.max_whole_image_pixels} are allowed",
            )
        return out

    def fits_whole_image(self, out_size: tuple[int, int]) -> bool:
        """Whether an output of ``out_size`` can be served: always when tiled, up to the cap when whole-image."""
        return not self.tiles.whole_image or out_size[0] * out_size[1] <= self.scale_limits.max_whole_image_pixels

    # -- plan ------------------------------------------------------------------------------------

    def plan(self, lr_size: tuple[int, int], out_size: tuple[int, int]) -> TilePlan:
        tiles = self.tiles
        if tiles.whole_image:
            return plan_tiles(lr_size, out_size, max(lr_size), 0)
        return plan_tiles(lr_size, out_size, tiles.tile_size, tiles.halo, tiles.alignment)

    def flops_table(self, plan: TilePlan) -> dict[float, int]:
        """FLOPs the plan would run at each served width."""
        return {width: plan.flops(self.model, width) for width in self.policy.widths}

    # -- decide ----------------------------------------------------------------------------------

    def decide(self, request: WidthRequest) -> WidthDecision:
        """Run the scheduler (and admission) on a fresh snapshot.

        422 over budget or when the request alone could not finish within its deadline or the request
        timeout; 503 (with Retry-After) when the load is why: the deadline cannot be met now, or the
        queue has no room.
        """
        snapshot = self.sampler.snapshot()
        try:
            decision = choose_width(snapshot, request, self.policy, self._previous)
        except BudgetTooSmall as error:
            raise Unprocessable("budget_too_small", str(error)) from None
        except RequestTooCostly as error:
            raise Unprocessable("request_too_costly", str(error)) from None
        except DeadlineUnreachable as error:
            retry = max(error.predicted_s - error.deadline_s, queued_work_s(snapshot))
            raise Unavailable("deadline_unreachable", str(error), retry_after_s=retry) from None
        except QueueTooLong as error:
            retry = error.backlog_s - (self.policy.max_queue_s or 0.0)
            raise Unavailable("queue_full", str(error), retry_after_s=max(retry, queued_work_s(snapshot))) from None
        except ValueError as error:  # a forced width outside the served set
            raise Unprocessable("width_not_served", str(error)) from None
        self._previous = decision
        self.metrics.width_selected.labels(width=width_label(decision.width), reason=decision.reason).inc()
        self.metrics.load_level.set(decision.load_level)
        logger.debug("decision %s (queue %d tiles)", decision, snapshot.queue_depth)
        return decision

    # -- batch + infer ---------------------------------------------------------------------------

    def make_jobs(
        self, image: DecodedImage, plan: TilePlan, width: float, request_id: str
    ) -> tuple[list[TileJob], list[asyncio.Future[TileResult]], torch.Tensor]:
        """One job per tile, each with its own future, in ``plan.tiles()`` order, and the (H, W, 3)
        canvas (uint8, or float32 for an exact image) the tiles write themselves into as their batches finish."""
        loop = asyncio.get_running_loop()
        canvas = new_canvas(plan, dtype=torch.float32 if image.exact else torch.uint8)
        scale = (plan.out_size[0] / plan.lr_size[0], plan.out_size[1] / plan.lr_size[1])
        key = BatchKey(width, plan.lr_tile_shape, plan.out_tile_shape, image.exact)
        tile_flops = plan.tile_flops(self.model, width)
        jobs, futures = [], []
        for tile in plan.tiles():
            coord_y, coord_x, cell = tile_query(plan, tile)
            future: asyncio.Future[TileResult] = loop.create_future()
            jobs.append(
                TileJob(
                    key=key,
                    lr=crop_window(image.rgb, plan, tile),
                    coord_y=coord_y,
                    coord_x=coord_x,
                    cell=cell,
                    scale=scale,
                    flops=tile_flops,
                    future=future,
                    out=tile_region(canvas, plan, tile),
                    request_id=request_id,
                )
            )
            futures.append(future)
        return jobs, futures, canvas

    def submit(self, jobs: list[TileJob], deadline_at_s: float | None = None) -> None:
        """Queue the jobs; 503 with Retry-After when the queue is full or the server is draining."""
        try:
            self.batcher.submit(jobs, deadline_at_s)
        except QueueFull as error:
            retry = queued_work_s(self.sampler.snapshot())
            raise Unavailable("queue_full", f"server is at capacity: {error}", retry_after_s=retry) from None
        except BatcherClosed as error:
            raise Unavailable("draining", str(error), retry_after_s=1) from None

    # -- collect ---------------------------------------------------------------------------------

    @staticmethod
    def collect(canvas: torch.Tensor, results: list[TileResult], submitted_s: float, finished_s: float) -> Outcome:
        """The finished canvas (every tile has written itself into it); split the time in the batcher
        into compute (its batches, each shared batch counted once) and queue."""
        compute_s = sum({result.batch_id: result.batch_compute_s for result in results}.values())
        queue_s = max(0.0, (finished_s - submitted_s) - compute_s)
        return Outcome(pixels=canvas, queue_s=queue_s, compute_s=compute_s)

    def record_success(self, decision: WidthDecision, total_s: float, outcome: Outcome) -> None:
        """Latency histogram, and the overhead and calibration estimates admission's predictions use."""
        self.metrics.request_duration.labels(width=width_label(decision.width)).observe(total_s)
        self.throughput.observe_overhead(total_s - outcome.queue_s - outcome.compute_s)
        self.record_device_time(decision, outcome.queue_s + outcome.compute_s)

    def record_device_time(self, decision: WidthDecision, measured_s: float) -> None:
        """Calibrate predictions: the request's tiles took ``measured_s`` in the batcher (a timed-out
        request passes the time it waited)."""
        if decision.device_s is not None:
            self.throughput.observe_prediction(decision.device_s, measured_s)
            self.metrics.prediction_calibration.set(self.throughput.calibration)
