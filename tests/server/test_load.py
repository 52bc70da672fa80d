"""server/load.py: smoothing, GPU absence, NVML index mapping and the snapshot's live queue fields."""

from __future__ import annotations

import asyncio
import math

import pytest

from server.admission import QueuedTile, QueueView
from server.load import CpuProbe, GpuProbe, LoadSampler, find_cgroup_cpu, nvml_index
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
    probe = CpuProbe(detect=False)
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


# -- cgroup CPU quota and usage -------------------------------------------------------------------------


def fake_proc(tmp_path, cgroup: str, mounts: list[str]):
    """A /proc/self with ``cgroup`` and a ``mountinfo`` listing ``mounts`` (root, mount point, fstype, options)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    lines = [f"{30 + index} 23 0:{40 + index} {mount}" for index, mount in enumerate(mounts)]
    (proc / "mountinfo").write_text("\n".join(["22 1 0:21 / / rw - ext4 /dev/vda rw", *lines]) + "\n")
    return proc


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_and_usage_inside_a_container(tmp_path):
    """A container's own cgroup is the root of its cgroup2 mount (cgroup namespace): path '/'."""
    root = tmp_path / "sys" / "fs" / "cgroup"
    write(root / "cpu.max", "150000 100000\n")
    write(root / "cpu.stat", "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    proc = fake_proc(tmp_path, "0::/\n", [f"/ {root} rw,nosuid - cgroup2 cgroup2 rw"])
    found = find_cgroup_cpu(proc)
    assert found is not None and found.version == 2
    assert found.quota_cores == 1.5 and found.usage_s() == 2.5


def test_cgroup_v2_takes_the_tightest_quota_of_its_ancestors(tmp_path):
    """On a host view (no cgroup namespace), a pod-level limit above the container's cgroup still caps it."""
    root = tmp_path / "cgroup"
    write(root / "kubepods" / "pod1" / "cpu.max", "100000 100000\n")
    write(root / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000\n")
    write(root / "kubepods" / "pod1" / "ctr" / "cpu.stat", "usage_usec 7\n")
    proc = fake_proc(tmp_path, "0::/kubepods/pod1/ctr\n", [f"/ {root} rw - cgroup2 cgroup2 rw"])
    found = find_cgroup_cpu(proc)
    assert found is not None and found.quota_cores == 1.0
    assert found.usage_file == root / "kubepods" / "pod1" / "ctr" / "cpu.stat"


def test_cgroup_v2_without_a_quota_reads_none(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "max 100000\n")
    write(root / "cpu.stat", "usage_usec 1\n")
    found = find_cgroup_cpu(fake_proc(tmp_path, "0::/\n", [f"/ {root} rw - cgroup2 cgroup2 rw"]))
    assert found is not None and found.quota_cores is None


def test_cgroup_v1_on_a_hybrid_host_uses_the_v1_cpu_controllers(tmp_path):
    """Docker on cgroup v1 bind-mounts the container's cgroup at the controller's mount point: the
    membership path (/docker/abc) equals the mount's root, so the files sit at the mount point."""
    cpu, cpuacct, unified = tmp_path / "cpu", tmp_path / "cpuacct", tmp_path / "unified"
    write(cpu / "cpu.cfs_quota_us", "200000\n")
    write(cpu / "cpu.cfs_period_us", "100000\n")
    write(cpuacct / "cpuacct.usage", "3000000000\n")
    write(unified / "cpu.stat", "usage_usec 99\n")
    proc = fake_proc(
        tmp_path,
        "2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n0::/\n",
        [
            f"/docker/abc {cpu} ro - cgroup cgroup rw,cpu",
            f"/docker/abc {cpuacct} ro - cgroup cgroup rw,cpuacct",
            f"/ {unified} rw - cgroup2 cgroup2 rw",
        ],
    )
    found = find_cgroup_cpu(proc)
    assert found is not None and found.version == 1
    assert found.quota_cores == 2.0 and found.usage_s() == 3.0


def test_no_cgroup_files_means_no_cgroup(tmp_path):
    assert find_cgroup_cpu(tmp_path / "absent") is None


def test_cpu_probe_under_a_quota_ignores_the_rest_of_the_host(tmp_path, monkeypatch):
    """The issue this fixes: host processes made the scheduler narrow widths for cpu_busy although the
    container's quota had room. Under a quota only the cgroup's usage (minus our own) counts."""
    from types import SimpleNamespace

    import server.load as load

    root = tmp_path / "cgroup"
    write(root / "cpu.max", "100000 100000\n")  # 1 core
    stat = root / "cpu.stat"
    write(stat, "usage_usec 0\n")
    cgroup = find_cgroup_cpu(fake_proc(tmp_path, "0::/\n", [f"/ {root} rw - cgroup2 cgroup2 rw"]))
    own = {"user": 0.0}
    clock = {"now": 50.0}

    class FakeProcess:
        def cpu_times(self):
            return SimpleNamespace(user=own["user"], system=0.0)

        def cpu_affinity(self):
            return [0, 1, 2, 3]

    def host_must_not_be_read(*args, **kwargs):
        raise AssertionError("host-wide CPU times read under a quota")

    monkeypatch.setattr(load.psutil, "Process", FakeProcess)
    monkeypatch.setattr(load.psutil, "cpu_times", host_must_not_be_read)
    monkeypatch.setattr(load.time, "monotonic", lambda: clock["now"])
    probe = CpuProbe(cgroup)
    assert "quota 1 cores" in probe.source
    # 2 s of wall under a 1-core quota: the cgroup used 1.5 s, 1.0 s of it ours -> others 0.5 / 2.
    clock["now"] += 2.0
    own["user"] += 1.0
    write(stat, "usage_usec 1500000\n")
    assert probe.read() == 0.25


def test_cpu_probe_without_a_quota_reads_only_the_cores_it_may_use(monkeypatch):
    """A cpuset (affinity) narrower than the host: busy time of those cores only, over their count."""
    from types import SimpleNamespace

    import server.load as load

    busy = [0.0, 0.0, 0.0, 0.0]
    own = {"user": 0.0}
    clock = {"now": 10.0}

    class FakeProcess:
        def cpu_times(self):
            return SimpleNamespace(user=own["user"], system=0.0)

        def cpu_affinity(self):
            return [2, 3]

    def cpu_times(percpu=False):
        assert percpu, "a cpuset must be read per core"
        return [SimpleNamespace(user=value, system=0.0) for value in busy]

    monkeypatch.setattr(load.psutil, "Process", FakeProcess)
    monkeypatch.setattr(load.psutil, "cpu_count", lambda: 4)
    monkeypatch.setattr(load.psutil, "cpu_times", cpu_times)
    monkeypatch.setattr(load.time, "monotonic", lambda: clock["now"])
    probe = CpuProbe(detect=False)
    assert probe.source.startswith("host-wide: 2 of 4 cores")
    clock["now"] += 1.0
    busy[0] += 1.0  # a core we may not use: not our competition
    busy[2] += 0.5
    busy[3] += 0.5
    own["user"] += 0.5
    assert probe.read() == 0.25
