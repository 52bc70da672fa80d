"""Load probes and the background sampler: the only module that touches psutil or pynvml.

The sampler reads the CPU utilisation of other processes (psutil) and, when serving on CUDA, GPU utilisation and free
memory (pynvml, from the ``nvidia-ml-py`` package) every ``interval_s``, smooths them with an EWMA,
and publishes them as gauges. :meth:`LoadSampler.snapshot` combines the smoothed readings with the
live queue and the measured throughput into the scheduler's :class:`LoadSnapshot`. A GPU that cannot
be read (no driver, no NVML, a MIG slice without utilisation counters) gives ``None`` fields, never an
error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Protocol

import psutil

from server.admission import QueueView
from server.metrics import ServerMetrics
from server.scheduler import LoadSnapshot, queued_work_s
from server.throughput import ThroughputTracker

logger = logging.getLogger("anysr.server.load")


class CpuProbe:
    """CPU utilisation by *other* processes since the previous read, as a fraction of all cores.

    The server's own inference already shows in its queue (the scheduler's queue signal); counting it
    again as CPU load would make every running request look like contention, so a lone request on an
    idle host would be narrowed. What the CPU signal adds is competition the queue cannot see: other
    work on the host. So this is host busy time minus this process's CPU time, over the wall time.
    """

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        host = psutil.cpu_times()
        # guest time is already inside user time on Linux, so list the busy fields rather than summing all.
        busy = sum(getattr(host, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))
        own = self._process.cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def read(self) -> float:
        now, busy, own = self._sample()
        then, busy_before, own_before = self._last
        self._last = (now, busy, own)
        capacity = (now - then) * self._cores
        if capacity <= 0:
            return 0.0
        others = (busy - busy_before) - (own - own_before)
        return min(1.0, max(0.0, others / capacity))


class GpuReading(Protocol):
    def read(self) -> tuple[float | None, int | None]: ...


def nvml_index(cuda_index: int, visible: str | None) -> int | str:
    """The NVML device for CUDA ordinal ``cuda_index``: CUDA_VISIBLE_DEVICES renumbers devices.

    Returns an NVML index, or a UUID string when the variable lists UUIDs.
    """
    if not visible:
        return cuda_index
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if cuda_index >= len(entries):
        raise ValueError(f"CUDA device {cuda_index} is not among CUDA_VISIBLE_DEVICES={visible!r}")
    entry = entries[cuda_index]
    return int(entry) if entry.isdigit() else entry


class GpuProbe:
    """Utilisation and free memory of one GPU via pynvml; ``(None, None)`` when it cannot be read."""

    def __init__(self, cuda_index: int) -> None:
        self._nvml: Any = None
        self._handle: Any = None
        try:
            import pynvml  # from nvidia-ml-py; imported lazily so CPU hosts never load NVML

            pynvml.nvmlInit()
            target = nvml_index(cuda_index, os.environ.get("CUDA_VISIBLE_DEVICES"))
            if isinstance(target, int):
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(target)
            else:
                self._handle = pynvml.nvmlDeviceGetHandleByUUID(target)
            self._nvml = pynvml
        except Exception as error:  # no driver, no library, unknown device: serve without GPU readings
            logger.warning("GPU load readings unavailable (%s); the scheduler will use the queue only", error)
            self._handle = None

    def read(self) -> tuple[float | None, int | None]:
        if self._handle is None:
            return None, None
        utilisation: float | None
        free: int | None
        try:
            utilisation = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu / 100.0
        except Exception:  # e.g. MIG slices report no utilisation
            utilisation = None
        try:
            free = int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).free)
        except Exception:
            free = None
        return utilisation, free

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
            self._handle = None


class QueueStats(Protocol):
    """What the sampler needs from the batcher."""

    @property
    def queue_depth(self) -> int: ...

    @property
    def queued_pixels(self) -> int: ...

    def queued_flops(self) -> dict[float, int]: ...

    def queue_view(self) -> QueueView: ...


class LoadSampler:
    """Smoothed load readings plus live queue state → :class:`LoadSnapshot`."""

    def __init__(
        self,
        cpu: CpuProbe,
        gpu: GpuReading | None,
        queue: QueueStats,
        throughput: ThroughputTracker,
        metrics: ServerMetrics,
        interval_s: float,
        smoothing: float,
    ) -> None:
        if interval_s <= 0 or not 0.0 < smoothing <= 1.0:
            raise ValueError(f"need interval_s > 0 and smoothing in (0, 1], got {interval_s} and {smoothing}")
        self._cpu = cpu
        self._gpu = gpu
        self._queue = queue
        self._throughput = throughput
        self._metrics = metrics
        self.interval_s = interval_s
        self.smoothing = smoothing
        self._cpu_smoothed: float | None = None
        self.gpu_utilisation: float | None = None
        self.gpu_memory_free_bytes: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def cpu_utilisation(self) -> float:
        """Smoothed CPU utilisation; the first sample is taken as is (0 before any sample)."""
        return self._cpu_smoothed or 0.0

    def _smooth(self, previous: float | None, value: float) -> float:
        return value if previous is None else previous + self.smoothing * (value - previous)

    def sample(self) -> None:
        """Take one reading and fold it into the averages (free memory is not averaged: the latest counts)."""
        self._cpu_smoothed = self._smooth(self._cpu_smoothed, self._cpu.read())
        if self._gpu is not None:
            utilisation, free = self._gpu.read()
            self.gpu_utilisation = None if utilisation is None else self._smooth(self.gpu_utilisation, utilisation)
            self.gpu_memory_free_bytes = free
        self._metrics.cpu_utilisation.set(self.cpu_utilisation)
        self._metrics.gpu_utilisation.set(float("nan") if self.gpu_utilisation is None else self.gpu_utilisation)
        self._metrics.gpu_memory_free.set(
            float("nan") if self.gpu_memory_free_bytes is None else self.gpu_memory_free_bytes
        )
        self._metrics.queue_work.set(queued_work_s(self.snapshot()))

    def snapshot(self) -> LoadSnapshot:
        """The scheduler's view now: smoothed device readings, the live queue, measured throughput."""
        return LoadSnapshot(
            cpu_utilisation=self.cpu_utilisation,
            gpu_utilisation=self.gpu_utilisation,
            gpu_memory_free_bytes=self.gpu_memory_free_bytes,
            queue_depth=self._queue.queue_depth,
            queued_pixels=self._queue.queued_pixels,
            queued_flops=self._queue.queued_flops(),
            flops_per_s=self._throughput.flops_per_s(),
            request_overhead_s=self._throughput.overhead_s,
            timestamp_s=time.monotonic(),
            queue=self._queue.queue_view(),
            calibration=self._throughput.calibration,
        )

    def start(self) -> None:
        """Start sampling on the running loop (lifespan)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="anysr-load-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if isinstance(self._gpu, GpuProbe):
            self._gpu.close()

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a probe hiccup must not kill sampling
                logger.exception("load sample failed")
            await asyncio.sleep(self.interval_s)
