"""server/load.py: smoothing, GPU absence, NVML index mapping and the snapshot's live queue fields."""

from __future__ import annotations

import asyncio
import math

import pytest

from server.admission import QueuedTile, QueueView
from server.load import CpuProbe, GpuProbe, LoadSampler, nvml_index
from server.metrics import ServerMetrics
from server.throughput import ThroughputTracker


class FixedCpu:
    def __init__(self, values):
        self.values = list(values)

    def read(self) -> float:
        return self.values.pop(0)


class FixedGpu:
    def __init__(self, utilisation, free):
        self.reading = (utilisation, free)

    def read(self):
        return self.reading


class FakeQueue:
    queue_depth = 3
    queued_pixels = 300

    def queued_flops(self):
        return {1.0: 2_000}

    def queue_view(self):
        return QueueView(tiles=(QueuedTile(0.0, 1.0, 2_000, 0),), deadlines_s=(None,))


def make_sampler(cpu_values, gpu=None, smoothing=0.5):
    metrics = ServerMetrics()
    throughput = ThroughputTracker(0.5)
    throughput.seed(1.0, 1_000.0)
    sampler = LoadSampler(FixedCpu(cpu_values), gpu, FakeQueue(), throughput, metrics, 0.01, smoothing)
    return sampler, metrics


def test_cpu_only_host_has_no_gpu_fields_and_nan_gauges():
    sampler, metrics = make_sampler([1.0, 0.0])
    sampler.sample()
    sampler.sample()
    snapshot = sampler.snapshot()
    assert snapshot.cpu_utilisation == pytest.approx(0.5)  # 0 → 1.0 → 0.5 with smoothing 0.5
    assert snapshot.gpu_utilisation is None and snapshot.gpu_memory_free_bytes is None
    assert snapshot.queue_depth == 3 and snapshot.queued_pixels == 300
    assert snapshot.queued_flops == {1.0: 2_000} and snapshot.flops_per_s == {1.0: 1_000.0}
    assert math.isnan(metrics.registry.get_sample_value("anysr_gpu_utilisation_ratio"))
    assert metrics.registry.get_sample_value("anysr_cpu_utilisation_ratio") == pytest.approx(0.5)
    assert metrics.registry.get_sample_value("anysr_queue_work_seconds") == pytest.approx(2.0)


def test_gpu_readings_are_smoothed_and_an_unreadable_utilisation_is_none():
    gpu = FixedGpu(0.8, 5 << 30)
    sampler, metrics = make_sampler([0.1, 0.1, 0.1], gpu=gpu)
    sampler.sample()
    sampler.sample()
    assert sampler.snapshot().gpu_utilisation == pytest.approx(0.8)
    assert sampler.snapshot().gpu_memory_free_bytes == 5 << 30
    assert metrics.registry.get_sample_value("anysr_gpu_memory_free_bytes") == 5 << 30
    gpu.reading = (None, None)
    sampler.sample()
    assert sampler.snapshot().gpu_utilisation is None


def test_background_sampling_starts_and_stops():
    async def scenario():
        sampler, _ = make_sampler([0.4] * 1000)
        sampler.start()
        await asyncio.sleep(0.05)
        await sampler.stop()
        return sampler.cpu_utilisation

    assert asyncio.run(scenario()) > 0.0


def test_real_cpu_probe_reads_a_fraction():
    probe = CpuProbe()
    assert 0.0 <= probe.read() <= 1.0


def test_gpu_probe_without_a_usable_gpu_reads_none():
    # On hosts without NVML (or with an index that does not exist) the probe must degrade, not raise.
    probe = GpuProbe(cuda_index=63)
    assert probe.read() == (None, None)
    probe.close()


def test_nvml_index_follows_cuda_visible_devices():
    assert nvml_index(0, None) == 0
    assert nvml_index(1, "3,5") == 5
    assert nvml_index(0, "GPU-1234") == "GPU-1234"
    with pytest.raises(ValueError, match="not among"):
        nvml_index(2, "0,1")


def test_cpu_probe_counts_other_processes_not_its_own(monkeypatch):
    """Host busy time minus this process's own CPU time, over wall time × cores."""
    from types import SimpleNamespace

    import server.load as load

    host = {"user": 0.0, "system": 0.0}
    own = {"user": 0.0}
    clock = {"now": 100.0}
    monkeypatch.setattr(load.psutil, "cpu_count", lambda: 2)
    monkeypatch.setattr(
        load.psutil, "cpu_times", lambda: SimpleNamespace(user=host["user"], nice=0.0, system=host["system"], idle=0.0)
    )

    class FakeProcess:
        def cpu_times(self):
            return SimpleNamespace(user=own["user"], system=0.0)

    monkeypatch.setattr(load.psutil, "Process", FakeProcess)
    monkeypatch.setattr(load.time, "monotonic", lambda: clock["now"])
    probe = CpuProbe()
    # 1 s of wall on 2 cores; the host was busy 1.5 core-seconds, 1.0 of them our own inference.
    clock["now"] += 1.0
    host["user"] += 1.5
    own["user"] += 1.0
    assert probe.read() == 0.25
    # Only our own work: the CPU signal stays at zero (the queue signal covers it).
    clock["now"] += 1.0
    host["user"] += 2.0
    own["user"] += 2.0
    assert probe.read() == 0.0
