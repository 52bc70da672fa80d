"""Sample a process's resident memory (its children included) on a background thread.

Used by the suite's memory part to find the server's peak RSS during one large request. psutil reads
``/proc``; at 20 Hz a short spike (a buffer allocated and freed within 50 ms) can be missed, so the
peak is a lower bound, which the report says.
"""

from __future__ import annotations

import threading
import time

import psutil


def tree_rss(process: psutil.Process) -> int:
    """RSS in bytes of ``process`` plus all its live descendants (one that exits meanwhile counts 0)."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


class RssSampler:
    """Samples :func:`tree_rss` of ``pid`` every ``1 / rate_hz`` seconds between ``start`` and ``stop``.

    ``samples`` holds (``time.monotonic()``, bytes) pairs; callers split them into phases (idle, request)
    afterwards with :meth:`between`, using their own ``time.monotonic()`` stamps.
    """

    def __init__(self, pid: int, rate_hz: float = 20.0) -> None:
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        self.pid = pid
        self.rate_hz = rate_hz
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("RssSampler already started")
        process = psutil.Process(self.pid)
        self._thread = threading.Thread(target=self._run, args=(process,), name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self, process: psutil.Process) -> None:
        interval = 1.0 / self.rate_hz
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), tree_rss(process)))
            except psutil.NoSuchProcess:
                return
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def between(self, start_s: float, stop_s: float) -> list[int]:
        """RSS values sampled in [start_s, stop_s]."""
        return [rss for at, rss in self.samples if start_s <= at <= stop_s]

    def timeline(self, origin_s: float, bucket_s: float = 1.0) -> list[list[float]]:
        """[[seconds since ``origin_s``, max RSS bytes in that bucket], ...]: a compact curve for the JSON."""
        buckets: dict[int, int] = {}
        for at, rss in self.samples:
            index = int((at - origin_s) // bucket_s)
            buckets[index] = max(buckets.get(index, 0), rss)
        return [[index * bucket_s, rss] for index, rss in sorted(buckets.items())]


def reset_kernel_peak(pid: int) -> bool:
    """Reset Linux's peak-RSS counter (VmHWM) of ``pid`` to its current RSS; False where that is not possible.

    Writing ``5`` to ``/proc/PID/clear_refs`` does this (Linux 4.0+), so a later :func:`kernel_peak` is
    the exact peak since now, spikes between samples included.
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def kernel_peak(pid: int) -> int | None:
    """Linux's peak RSS (VmHWM) of ``pid`` alone, in bytes; None where /proc does not report it."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
