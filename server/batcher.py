"""Cross-request tile batching: a non-blocking handle, one loop task that owns the queue, a pure policy.

- :func:`next_batch` is the policy: drop abandoned jobs, then take the first job in run order (smallest
  tag, then arrival) and as many jobs of its key, in run order, as fit the limits (count, LR pixels),
  or wait until that job has waited ``max_wait_s``. Pure and clock-free (``now`` is passed in), so it
  is tested without threads.
- Tags make the queue fair across requests (start-time fair queuing, ``server/admission.py``): ``submit``
  tags a request's k-th tile ``V + k·c`` (``V`` the tag of the batch that started last, ``c`` its
  predicted seconds per tile), so a small request's tile runs after the batch on the device and at most
  one tile of each request already waiting, not after all 64 tiles of a large one. ``fair=False``
  gives every tile of a request one tag in arrival order (first in, first out).
- :class:`Batcher` is the handle and the loop. ``submit`` never blocks (it raises when the queue is
  full or closed); the loop runs each batch on one inference thread via the injected ``run_batch``
  (a model runner in production, a fake in tests) and resolves one future per job. If a batch
  fails, every future in it gets the same exception and none is left pending.

Started and drained by the app's lifespan, never at import. Knows nothing of HTTP or the model.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from server.admission import QueuedTile, QueueView, rate_for
from server.jobs import TileJob, TileResult
from server.metrics import ServerMetrics, width_label
from server.throughput import ThroughputTracker

logger = logging.getLogger("anysr.server.batcher")

#: Run a batch of jobs that share a key; returns one (Th, Tw, 3) uint8 tensor per job, in order.
RunBatch = Callable[[list[TileJob]], list[torch.Tensor]]


@dataclass(frozen=True)
class BatchLimits:
    """Caps on one batch and on the queue."""

    #: Most tiles in one batch.
    max_tiles: int = 8
    #: Most LR pixels in one batch (a single larger tile still runs, alone).
    max_pixels: int = 1 << 20
    #: Longest the oldest queued tile waits for a batch to fill, seconds.
    max_wait_s: float = 0.002
    #: Most tiles queued or running; a request that would exceed it is refused (unless the queue is empty).
    max_queue_tiles: int = 256

    def __post_init__(self) -> None:
        if self.max_tiles < 1 or self.max_pixels < 1 or self.max_queue_tiles < 1:
            raise ValueError(
                f"batch limits must be positive, got max_tiles={self.max_tiles}, max_pixels={self.max_pixels}, "
                f"max_queue_tiles={self.max_queue_tiles}"
            )
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {self.max_wait_s}")


@dataclass
class NextBatch:
    """What :func:`next_batch` decided: jobs to run now (maybe none), jobs dropped, and when to look again."""

    jobs: list[TileJob]
    dropped: list[TileJob]
    #: When ``jobs`` is empty but the queue is not: the time the oldest job's wait runs out.
    retry_at_s: float | None = None


def run_order(job: TileJob) -> tuple[float, int]:
    """The key the queue runs in: smallest tag first, then arrival."""
    return job.tag, job.seq


def next_batch(queue: deque[TileJob], limits: BatchLimits, now: float) -> NextBatch:
    """Remove and return the next batch from ``queue`` (in :func:`run_order`), plus abandoned jobs.

    A batch holds jobs of the first job's key only, in run order, up to ``max_tiles`` and
    ``max_pixels`` (always at least one job). It is returned once full or once the first job has
    waited ``max_wait_s``; until then ``jobs`` is empty and ``retry_at_s`` says when to call again.
    Jobs not taken keep their places; the queue is left in run order.
    """
    dropped = [job for job in queue if job.abandoned]
    ordered = sorted((job for job in queue if not job.abandoned), key=run_order)
    queue.clear()
    queue.extend(ordered)
    if not queue:
        return NextBatch([], dropped)
    head = queue[0]
    chosen: list[TileJob] = []
    pixels = 0
    full = False
    for job in queue:
        if job.key != head.key:
            continue
        if chosen and (len(chosen) >= limits.max_tiles or pixels + job.lr_pixels > limits.max_pixels):
            full = True
            break
        chosen.append(job)
        pixels += job.lr_pixels
    full = full or len(chosen) >= limits.max_tiles or pixels >= limits.max_pixels
    deadline = head.submitted_s + limits.max_wait_s
    if not full and now < deadline:
        return NextBatch([], dropped, retry_at_s=deadline)
    picked = {id(job) for job in chosen}
    kept = [job for job in queue if id(job) not in picked]
    queue.clear()
    queue.extend(kept)
    return NextBatch(chosen, dropped)


class QueueFull(Exception):
    """The queue cannot take a request's tiles now."""

    def __init__(self, queued_tiles: int, requested_tiles: int, max_queue_tiles: int) -> None:
        self.queued_tiles = queued_tiles
        self.requested_tiles = requested_tiles
        super().__init__(
            f"queue holds {queued_tiles} of at most {max_queue_tiles} tiles; cannot add {requested_tiles} more"
        )


class BatcherClosed(Exception):
    """The batcher is draining or stopped and takes no new work."""


class Batcher:
    """Queue handle plus the loop that batches and runs tiles on one inference thread."""

    def __init__(
        self,
        run_batch: RunBatch,
        limits: BatchLimits,
        metrics: ServerMetrics,
        throughput: ThroughputTracker,
        thread_name: str = "anysr-infer",
        fair: bool = True,
    ) -> None:
        self._run_batch = run_batch
        self.limits = limits
        self.fair = fair
        self._metrics = metrics
        self._throughput = throughput
        self._thread_name = thread_name
        self._queue: deque[TileJob] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._next_batch_id = 0
        # Queued + running work, kept incrementally so snapshots are O(widths).
        self._pending_flops: dict[float, int] = {}
        self._pending_pixels = 0
        self._pending_tiles = 0
        # Fair-queuing state: the tag of the batch that started last, arrival counters, the running batch.
        self._virtual_time = 0.0
        self._next_seq = 0
        self._next_request = 0
        self._running: tuple[float, int, float] | None = None  # width, FLOPs, perf_counter start

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop on the running event loop (called from the lifespan)."""
        if self._task is not None:
            raise RuntimeError("batcher already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="anysr-batcher")

    async def close(self, timeout_s: float) -> None:
        """Refuse new work, let queued work finish for up to ``timeout_s``, then fail what is left.

        Closing stops batches from waiting for company (queued tiles run at once). Idempotent. Queued
        tiles are failed *before* the loop is cancelled: a cancellation that lands just as the loop's
        wake-up fires can be swallowed by ``asyncio.wait_for``, and an emptied queue then ends the loop
        on its own instead of leaving it waiting for a batch to fill.
        """
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if not done:
            logger.error("batcher did not drain within %.1f s; failing %d queued tiles", timeout_s, len(self._queue))
            self._fail_queued()
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.1)
        self._fail_queued()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _fail_queued(self) -> None:
        for job in self._queue:
            if job.future is not None and not job.future.done():
                job.future.set_exception(BatcherClosed("server shut down before this tile ran"))
        self._account(self._queue, -1)
        self._queue.clear()

    @property
    def closing(self) -> bool:
        return self._closing

    # -- handle ----------------------------------------------------------------------------------

    def submit(self, jobs: list[TileJob], deadline_at_s: float | None = None) -> None:
        """Queue all of a request's tiles at once, or none, tagged for fair queuing. Never blocks.

        ``deadline_at_s`` (``perf_counter`` time) is the request's deadline, which admission protects.
        Raises :class:`BatcherClosed` while draining and :class:`QueueFull` when the tiles would push
        the queue past ``max_queue_tiles`` (a request is always admitted into an empty queue, so a
        large image cannot be refused forever; admission refuses what could not finish in time).
        """
        if self._closing or self._task is None:
            raise BatcherClosed("the server is not accepting work")
        if self._pending_tiles and self._pending_tiles + len(jobs) > self.limits.max_queue_tiles:
            raise QueueFull(self._pending_tiles, len(jobs), self.limits.max_queue_tiles)
        now = time.perf_counter()
        request = self._next_request
        self._next_request += 1
        rates = self._throughput.flops_per_s()
        tag = self._virtual_time if self.fair else float(request)
        for job in jobs:
            job.submitted_s = now
            job.tag = tag
            job.seq = self._next_seq
            job.request_seq = request
            job.deadline_at_s = deadline_at_s
            self._next_seq += 1
            if self.fair:
                rate = rate_for(job.width, rates)
                tag += job.flops / rate if rate else 1.0
            self._queue.append(job)
        self._account(jobs, +1)
        self._wakeup.set()

    def queue_view(self) -> QueueView:
        """The queue tile by tile, in run order, with each request's time left to its deadline (admission)."""
        now = time.perf_counter()
        requests: dict[int, int] = {}
        deadlines: list[float | None] = []
        tiles = []
        for job in sorted((job for job in self._queue if not job.abandoned), key=run_order):
            index = requests.get(job.request_seq)
            if index is None:
                index = requests[job.request_seq] = len(deadlines)
                deadlines.append(None if job.deadline_at_s is None else job.deadline_at_s - now)
            tiles.append(QueuedTile(job.tag, job.width, job.flops, index))
        width, flops, started = self._running or (1.0, 0, now)
        return QueueView(
            virtual_time=self._virtual_time,
            tiles=tuple(tiles),
            deadlines_s=tuple(deadlines),
            running_width=width,
            running_flops=flops,
            running_elapsed_s=now - started,
            fair=self.fair,
        )

    @property
    def queue_depth(self) -> int:
        """Tiles queued or running."""
        return self._pending_tiles

    @property
    def queued_pixels(self) -> int:
        return self._pending_pixels

    def queued_flops(self) -> dict[float, int]:
        """FLOPs queued or running, by width."""
        return {width: flops for width, flops in self._pending_flops.items() if flops}

    # -- loop ------------------------------------------------------------------------------------

    def _account(self, jobs: Iterable[TileJob], sign: int) -> None:
        for job in jobs:
            self._pending_flops[job.width] = self._pending_flops.get(job.width, 0) + sign * job.flops
            self._pending_pixels += sign * job.lr_pixels
            self._pending_tiles += sign
        self._metrics.queue_depth.set(self._pending_tiles)
        self._metrics.queue_pixels.set(self._pending_pixels)

    async def _loop(self) -> None:
        while True:
            self._wakeup.clear()
            # While closing, a batch no longer waits to fill: nothing new can join it.
            now = math.inf if self._closing else time.perf_counter()
            plan = next_batch(self._queue, self.limits, now)
            if plan.dropped:
                self._account(plan.dropped, -1)
                self._metrics.tiles_dropped.inc(len(plan.dropped))
                logger.debug("dropped %d abandoned tiles", len(plan.dropped))
            if plan.jobs:
                await self._run(plan.jobs)
                continue
            if self._closing and not self._queue:
                return
            timeout = None if plan.retry_at_s is None else max(0.0, plan.retry_at_s - time.perf_counter())
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass

    def _run_and_place(self, jobs: list[TileJob]) -> list[torch.Tensor | None]:
        """Run a batch (inference thread) and write each output into its job's ``out`` view, if any.

        Copying here, off the event loop, keeps one copy of a big request's pixels alive instead of two
        (per-tile outputs until the last tile, then the stitched image)."""
        outputs = self._run_batch(jobs)
        if len(outputs) != len(jobs):
            raise RuntimeError(f"runner returned {len(outputs)} outputs for a batch of {len(jobs)} tiles")
        placed: list[torch.Tensor | None] = []
        for job, pixels in zip(jobs, outputs):
            if job.out is None:
                placed.append(pixels)
            else:
                job.out.copy_(pixels)
                placed.append(None)
        return placed

    async def _run(self, jobs: list[TileJob]) -> None:
        """Run one batch on the inference thread and resolve its futures."""
        assert self._executor is not None
        width = jobs[0].width
        label = width_label(width)
        started = time.perf_counter()
        self._virtual_time = max(self._virtual_time, jobs[0].tag)
        self._running = (width, sum(job.flops for job in jobs), started)
        for job in jobs:
            job.started_s = started
            self._metrics.queue_wait.labels(width=label).observe(started - job.submitted_s)
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_and_place, jobs)
        except asyncio.CancelledError:  # closed past its deadline while this batch ran: nobody will read it
            for job in jobs:
                if job.future is not None and not job.future.done():
                    job.future.set_exception(BatcherClosed("server shut down while this tile ran"))
            raise
        except Exception as error:  # every future of the batch gets the same error
            logger.exception("batch %d of %d tiles at width %s failed", batch_id, len(jobs), label)
            for job in jobs:
                if job.future is not None and not job.future.done():
                    job.future.set_exception(error)
            return
        finally:
            self._running = None
            self._account(jobs, -1)
        elapsed = time.perf_counter() - started
        flops = sum(job.flops for job in jobs)
        self._throughput.observe(width, flops, elapsed)
        self._metrics.compute.labels(width=label).observe(elapsed)
        self._metrics.batch_size.observe(len(jobs))
        self._metrics.flops.labels(width=label).inc(flops)
        self._metrics.throughput.labels(width=label).set(self._throughput.flops_per_s().get(width, 0.0))
        for job, pixels in zip(jobs, outputs):
            if job.future is not None and not job.future.done():
                job.future.set_result(TileResult(pixels, batch_id, started, elapsed))
