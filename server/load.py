"""Load probes and the background sampler: the only module that touches psutil or pynvml.

The sampler reads the CPU utilisation of other processes (the container's cgroup when it has a CPU
quota, else psutil host-wide) and, when serving on CUDA, GPU utilisation and free
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from server.admission import QueueView
from server.metrics import ServerMetrics
from server.scheduler import LoadSnapshot, queued_work_s
from server.throughput import ThroughputTracker

logger = logging.getLogger("anysr.server.load")


#: Where the kernel describes this process's cgroups and mounts (tests point these at fake trees).
PROC_SELF = Path("/proc/self")


@dataclass(frozen=True)
class CgroupCpu:
    """The CPU quota and usage counter of the cgroup this process runs in (a container's, usually).

    A container's CPU limit (``docker run --cpus``, compose ``cpus``, a Kubernetes CPU limit) is a CFS
    quota on its cgroup: cgroup v2 ``cpu.max`` (``"200000 100000"`` = 2 cores, ``"max 100000"`` = none),
    or cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1 = none). The usage counter is v2
    ``cpu.stat`` ``usage_usec`` or v1 ``cpuacct.usage`` (ns), covering every process in the cgroup.
    """

    version: int
    #: The tightest quota on the cgroup or any visible ancestor, in cores; None when unlimited.
    quota_cores: float | None
    #: File holding the cgroup's cumulative CPU time.
    usage_file: Path

    def usage_s(self) -> float:
        """CPU seconds used so far by every process in the cgroup."""
        if self.version == 2:
            for line in self.usage_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
            raise ValueError(f"no usage_usec in {self.usage_file}")
        return int(self.usage_file.read_text().strip()) / 1e9

    def describe(self) -> str:
        quota = "no CPU quota" if self.quota_cores is None else f"CPU quota {self.quota_cores:g} cores"
        return f"cgroup v{self.version} ({quota}, usage from {self.usage_file})"


def _mounts(proc: Path) -> list[tuple[str, Path, str, set[str]]]:
    """(root inside the hierarchy, mount point, fs type, super options) of every cgroup mount."""
    found = []
    for line in (proc / "mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        parts, extra = fields.split(), tail.split()
        if len(parts) >= 5 and len(extra) >= 3 and extra[0] in ("cgroup", "cgroup2"):
            found.append((parts[3], Path(parts[4]), extra[0], set(extra[2].split(","))))
    return found


def _cgroup_dir(path: str, root: str, mount_point: Path) -> Path | None:
    """Where cgroup ``path`` appears under a mount of the hierarchy at ``root`` (None: not visible there)."""
    relative = Path(path).relative_to(root) if Path(path).is_relative_to(root) else None
    return None if relative is None else mount_point / relative


def _tightest(directory: Path, mount_point: Path, quota_of) -> float | None:
    """The smallest quota from ``directory`` up to the mount point: a parent's limit caps its children."""
    quotas = []
    current = directory
    while True:
        quota = quota_of(current)
        if quota is not None:
            quotas.append(quota)
        if current == mount_point or current.parent == current:
            break
        current = current.parent
    return min(quotas) if quotas else None


def _v2_quota(directory: Path) -> float | None:
    try:
        limit, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
    except OSError:
        return None
    return None if limit == "max" else int(limit) / int(period or 100000)


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def find_cgroup_cpu(proc: Path = PROC_SELF) -> CgroupCpu | None:
    """This process's cgroup CPU accounting, or None where there is none to read (not Linux, no mounts).

    Follows ``/proc/self/cgroup`` to the mount that shows each hierarchy (``mountinfo``), so it works on
    the host and inside a container, whose cgroup appears as the root of its own mounts. The cpu
    controller lives in v1 when a v1 hierarchy lists it (hybrid hosts), otherwise in v2.
    """
    try:
        memberships = [
            line.split(":", 2) for line in (proc / "cgroup").read_text().splitlines() if line.count(":") >= 2
        ]
        mounts = _mounts(proc)
    except OSError:
        return None
    v1 = {
        controller: path for _, controllers, path in memberships for controller in controllers.split(",") if controller
    }
    if "cpu" in v1 and "cpuacct" in v1:
        quota_dir = usage_dir = None
        quota_mount = None
        for root, mount_point, fstype, options in mounts:
            if fstype != "cgroup":
                continue
            if "cpu" in options and quota_dir is None:
                quota_dir, quota_mount = _cgroup_dir(v1["cpu"], root, mount_point), mount_point
            if "cpuacct" in options and usage_dir is None:
                usage_dir = _cgroup_dir(v1["cpuacct"], root, mount_point)
        if quota_dir is None or usage_dir is None or not (usage_dir / "cpuacct.usage").is_file():
            return None
        return CgroupCpu(1, _tightest(quota_dir, quota_mount, _v1_quota), usage_dir / "cpuacct.usage")
    unified = [path for hierarchy, controllers, path in memberships if hierarchy == "0" and not controllers]
    for root, mount_point, fstype, _ in mounts:
        if fstype == "cgroup2" and unified:
            directory = _cgroup_dir(unified[0], root, mount_point)
            if directory is not None and (directory / "cpu.stat").is_file():
                return CgroupCpu(2, _tightest(directory, mount_point, _v2_quota), directory / "cpu.stat")
    return None


class CpuProbe:
    """CPU utilisation by *other* processes since the previous read, as a fraction of the CPU we may use.

    The server's own inference already shows in its queue (the scheduler's queue signal); counting it
    again as CPU load would make every running request look like contention, so a lone request on an
    idle host would be narrowed. What the CPU signal adds is competition the queue cannot see.

    Where that competition comes from depends on what limits us. Under a CPU quota (a container with a
    CPU limit) the quota is ours whatever the rest of the host does, so the signal is the cgroup's usage
    minus this process's, over the quota: other processes in the same container. Without a quota it is
    the host's busy time on the cores this process may run on (its affinity, e.g. a cpuset) minus this
    process's, over those cores. ``source`` says which applies (logged at start-up).
    """

    def __init__(self, cgroup: CgroupCpu | None = None, *, detect: bool = True) -> None:
        self._process = psutil.Process()
        if cgroup is None and detect:
            try:
                cgroup = find_cgroup_cpu()
            except (OSError, ValueError) as error:  # an unreadable or odd cgroup tree: fall back to the host
                logger.warning("cannot read this process's cgroup (%s); CPU load is read host-wide", error)
        self._cores = self._affinity()
        self._cgroup = cgroup if cgroup is not None and cgroup.quota_cores is not None else None
        if self._cgroup is not None:
            self._capacity = min(float(len(self._cores)), self._cgroup.quota_cores or 0.0)
            self.source = self._cgroup.describe()
        else:
            self._capacity = float(len(self._cores))
            self.source = f"host-wide: {len(self._cores)} of {psutil.cpu_count() or 1} cores" + (
                f" ({cgroup.describe()})" if cgroup is not None else ""
            )
        self._last = self._sample()
        logger.info("CPU load signal: %s", self.source)

    def _affinity(self) -> list[int]:
        """CPUs this process may run on (a cpuset narrows them); all of them where affinity is unknown."""
        try:
            return sorted(self._process.cpu_affinity())
        except (AttributeError, psutil.Error, OSError):
            return list(range(psutil.cpu_count() or 1))

    def _busy_s(self) -> float:
        """Busy CPU seconds of what we share the CPU with: the cgroup, or the host cores we may use."""
        if self._cgroup is not None:
            return self._cgroup.usage_s()
        total = psutil.cpu_count() or 1
        if len(self._cores) >= total:
            times = [psutil.cpu_times()]
        else:
            per_cpu = psutil.cpu_times(percpu=True)
            times = [per_cpu[index] for index in self._cores if index < len(per_cpu)]
        # guest time is already inside user time on Linux, so list the busy fields rather than summing all.
        fields = ("user", "nice", "system", "irq", "softirq", "steal")
        return sum(getattr(item, name, 0.0) for item in times for name in fields)

    def _sample(self) -> tuple[float, float, float]:
        own = self._process.cpu_times()
        return time.monotonic(), self._busy_s(), own.user + own.system

    def read(self) -> float:
        now, busy, own = self._sample()
        then, busy_before, own_before = self._last
        self._last = (now, busy, own)
        capacity = (now - then) * self._capacity
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
