"""The GPU benchmark's serving sections: the load tester's policy comparison on the device, and the
scheduler's GPU signal under a competing process, both with NVML read beside them.

``section_loadtest`` runs ``python -m loadtest compare`` (adaptive against fixed:1.0: a short rate
sweep, then twice the full-width capacity) as a subprocess, while :class:`NvmlSampler` reads the GPU's
utilisation and free memory a few times a second in this process. ``section_signal`` starts one
adaptive server, sends it a steady trickle of requests (too few to queue), and halfway starts
``benchmarks.gpu_hog`` in another process: the server's own ``/metrics`` gauges (what its scheduler
sees) and the widths it picks are recorded before, during and after. Without a readable GPU (the CPU
smoke run) NVML is reported unavailable and the same plumbing runs against the CPU signal.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks.bench_server_overhead import REPO, ServerLaunch, bench_image, running_server

if TYPE_CHECKING:
    from benchmarks.gpu import GpuRun

#: The server's load gauges read during the signal check.
GAUGES = (
    "anysr_gpu_utilisation_ratio",
    "anysr_gpu_memory_free_bytes",
    "anysr_cpu_utilisation_ratio",
    "anysr_load_level",
    "anysr_queue_work_seconds",
)
_GAUGE_LINE = re.compile(r"^(anysr_[a-z_]+) (\S+)$", re.MULTILINE)


class NvmlSampler:
    """Reads GPU utilisation and free memory every ``interval_s`` on a thread; a no-op without NVML."""

    def __init__(self, interval_s: float = 0.25, index: int = 0) -> None:
        self.interval_s = interval_s
        self.samples: list[dict[str, float]] = []
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
        except Exception as error:  # no library or no driver: a CPU host
            self.reason = f"NVML unavailable: {type(error).__name__}: {error}"

    @property
    def available(self) -> bool:
        return self._handle is not None

    def _read(self, origin: float) -> dict[str, float]:
        rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
        memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        return {
            "t": time.monotonic() - origin,
            "gpu_utilisation": rates.gpu / 100,
            "memory_utilisation": rates.memory / 100,
            "free_bytes": float(memory.free),
            "used_bytes": float(memory.used),
        }

    def _loop(self, origin: float) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._read(origin))
            except Exception as error:  # keep what was read; say why it stopped
                self.reason = f"NVML read failed: {type(error).__name__}: {error}"
                return
            self._stop.wait(self.interval_s)

    def start(self, origin: float) -> None:
        if self.available:
            self._thread = threading.Thread(target=self._loop, args=(origin,), name="nvml-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None

    def summary(self, start: float = float("-inf"), stop: float = float("inf")) -> dict[str, Any]:
        """Mean and max utilisation and least free memory of the samples taken in [start, stop)."""
        if not self.available:
            return {"available": False, "reason": self.reason}
        window = [sample for sample in self.samples if start <= sample["t"] < stop]
        if not window:
            return {"available": True, "samples": 0}
        utilisation = [sample["gpu_utilisation"] for sample in window]
        return {
            "available": True,
            "samples": len(window),
            "gpu_utilisation_mean": statistics.fmean(utilisation),
            "gpu_utilisation_max": max(utilisation),
            "memory_utilisation_mean": statistics.fmean(sample["memory_utilisation"] for sample in window),
            "free_bytes_min": min(sample["free_bytes"] for sample in window),
            "used_bytes_max": max(sample["used_bytes"] for sample in window),
        }


def section_loadtest(run: GpuRun) -> dict[str, Any]:
    """``loadtest compare`` of adaptive against fixed:1.0 on the device, NVML sampled throughout."""
    config = run.config
    out = run.work_dir / "loadtest"
    argv = [
        sys.executable,
        "-m",
        "loadtest",
        "compare",
        "--policies",
        "adaptive,fixed:1.0",
        "--weights",
        str(run.weights_path),
        f"--server-arg=--device={run.device}",
        "--workload",
        str(config.loadtest_workload),
        "--out",
        str(out),
        "--report",
        str(out / "report.md"),
        "--quiet",
        *config.loadtest_args,
        *(f"--server-arg={flag}" for flag in config.server_args),
    ]
    eval_json = REPO / "weights" / "eval" / "eval.json"
    if eval_json.is_file() and not config.smoke:
        argv += ["--eval-json", str(eval_json)]
    sampler = NvmlSampler(config.nvml_interval_s)
    origin = time.monotonic()
    sampler.start(origin)
    log_path = run.work_dir / "loadtest.log"
    try:
        with log_path.open("w") as log:
            done = subprocess.run(
                argv,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=max(30.0, run.remaining_s() - config.reserve_s),
                check=False,
            )
    finally:
        sampler.stop()
    run.write_file("loadtest/nvml.json", json.dumps(sampler.samples))
    result: dict[str, Any] = {
        "command": argv[1:],
        "returncode": done.returncode,
        "seconds": time.monotonic() - origin,
        "nvml": sampler.summary(),
    }
    results_path = out / "results.json"
    if done.returncode != 0 or not results_path.is_file():
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"loadtest compare exited with {done.returncode}:\n" + "\n".join(tail))
    result.update(summarise_loadtest(json.loads(results_path.read_text())))
    return result


def summarise_loadtest(results: dict[str, Any]) -> dict[str, Any]:
    """Capacity, each policy's sweep and overload segment, and the adaptive / fixed:1.0 overload ratios."""
    policies = {}
    for run in results["runs"]:
        steps = [{"rate": step.get("rate"), **phase_numbers(step)} for step in run.get("steps", [])]
        overload = run.get("overload") or {}
        segment = overload.get("segments", {}).get("overload", {})
        policies[run["policy"]] = {
            "precision": run.get("model", {}).get("precision"),
            "device": run.get("model", {}).get("device"),
            "steps": steps,
            "overload": phase_numbers(segment),
            "recovery_time_s": overload.get("recovery_time_s"),
        }
    adaptive = policies.get("adaptive", {}).get("overload", {})
    fixed = policies.get("fixed:1.0", {}).get("overload", {})
    ratios = {}
    if adaptive.get("goodput_rps") is not None and fixed.get("goodput_rps"):
        ratios["goodput"] = adaptive["goodput_rps"] / fixed["goodput_rps"]
    if adaptive.get("latency_p99_s") is not None and fixed.get("latency_p99_s"):
        ratios["p99"] = adaptive["latency_p99_s"] / fixed["latency_p99_s"]
    return {"capacity": results.get("capacity"), "policies": policies, "overload_ratios": ratios}


def phase_numbers(phase: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one sweep step or overload segment the summary keeps (the archive has them all)."""
    server = phase.get("server") or {}
    return {
        **{key: phase.get(key) for key in STEP_KEYS},
        "compute_busy_ratio": server.get("compute_busy_ratio"),
        "batch_mean_tiles": server.get("batch_mean_tiles"),
    }


STEP_KEYS = (
    "offered_rps",
    "achieved_rps",
    "goodput_rps",
    "latency_p50_s",
    "latency_p99_s",
    "width_mix",
    "rejected",
    "errors",
    "output_mpix_per_s",
    "schedule_lag_p99_ms",
)


def read_gauges(base: str) -> dict[str, float]:
    """The server's load gauges from ``/metrics`` (NaN where it has no reading)."""
    text = httpx.get(f"{base}/metrics", timeout=10, trust_env=False).text
    return {name: float(value) for name, value in _GAUGE_LINE.findall(text) if name in GAUGES}


def section_signal(run: GpuRun) -> dict[str, Any]:
    """Does the server see a second process load the GPU, and does adaptive narrow? Baseline, hog, after."""
    config = run.config
    baseline_s, hog_s, after_s = config.signal_phases_s
    png, _ = bench_image(config.signal_size)
    launch = ServerLaunch(
        weights=str(run.weights_path),
        extra_args=(
            "--device",
            str(run.device),
            "--policy",
            "adaptive",
            "--load-sample-interval-s",
            "0.25",
            *config.server_args,
        ),
        ready_timeout_s=config.ready_timeout_s,
    )
    requests: list[dict[str, Any]] = []
    gauges: list[dict[str, float]] = []
    sampler = NvmlSampler(config.nvml_interval_s)
    stop = threading.Event()
    # The load process starts now and sets up (imports, CUDA) while the server starts; it runs on cue.
    hog = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.gpu_hog", "--device", str(run.device), "--seconds", str(hog_s), "--wait"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with running_server(launch, run.work_dir / "signal-server.log") as server:
            _expect(hog, "ready")
            origin = time.monotonic()

            def send() -> None:
                headers = {"content-type": "image/png", "accept": "application/json"}
                with httpx.Client(timeout=120, trust_env=False) as client:
                    while not stop.is_set():
                        started = time.monotonic()
                        response = client.post(
                            f"{server.base}/upscale?scale={config.signal_scale}", content=png, headers=headers
                        )
                        body = response.json()
                        requests.append(
                            {
                                "t": started - origin,
                                "status": response.status_code,
                                "width": body.get("width"),
                                "reason": body.get("reason"),
                                "load_level": body.get("load_level"),
                                "seconds": time.monotonic() - started,
                            }
                        )
                        stop.wait(config.signal_gap_s)

            def scrape() -> None:
                while not stop.is_set():
                    gauges.append({"t": time.monotonic() - origin, **read_gauges(server.base)})
                    stop.wait(0.25)

            threads = [threading.Thread(target=send, daemon=True), threading.Thread(target=scrape, daemon=True)]
            sampler.start(origin)
            for thread in threads:
                thread.start()
            try:
                time.sleep(baseline_s)
                assert hog.stdin is not None
                hog.stdin.write("go\n")
                hog.stdin.flush()
                _expect(hog, "busy")
                hog_started = time.monotonic() - origin
                hog.communicate(timeout=hog_s + 120)
                hog_stopped = time.monotonic() - origin
                time.sleep(after_s)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=150)
                sampler.stop()
    finally:
        if hog.poll() is None:
            hog.kill()
            hog.communicate()
    # The server smooths its readings (EWMA) and the hog needs a moment to start: skip each phase's first second.
    settle = 1.0
    end = time.monotonic() - origin
    phases = {
        "baseline": (settle, hog_started),
        "hog": (hog_started + settle, hog_stopped),
        "after": (hog_stopped + settle, end),
    }
    summary = {
        name: summarise_phase(requests, gauges, sampler, start, stop_t) for name, (start, stop_t) in phases.items()
    }
    run.write_file(
        "signal/timeline.json", json.dumps({"requests": requests, "gauges": gauges, "nvml": sampler.samples})
    )
    signal = "anysr_gpu_utilisation_ratio" if run.device.type == "cuda" else "anysr_cpu_utilisation_ratio"
    base, during = summary["baseline"].get(signal), summary["hog"].get(signal)
    widths = summary["baseline"].get("mean_width"), summary["hog"].get("mean_width")
    return {
        "phases_s": {name: [round(start, 2), round(stop_t, 2)] for name, (start, stop_t) in phases.items()},
        "signal": signal,
        "summary": summary,
        "utilisation_rose": None if base is None or during is None else during > base + 0.1,
        "adaptive_narrowed": None if None in widths else widths[1] < widths[0],
        "requests": len(requests),
        "image": [config.signal_size, config.signal_size],
        "scale": config.signal_scale,
    }


def _expect(process: subprocess.Popen[str], word: str) -> None:
    """Read the load process's output until it prints ``word``; RuntimeError with what it said if it exits."""
    assert process.stdout is not None
    said = []
    for line in process.stdout:
        if line.strip() == word:
            return
        said.append(line)
    raise RuntimeError(f"the load process exited before saying {word!r}: {''.join(said)[-2000:]}")


def summarise_phase(
    requests: list[dict[str, Any]], gauges: list[dict[str, float]], sampler: NvmlSampler, start: float, stop: float
) -> dict[str, Any]:
    """Widths, reasons and mean gauges of one phase of the signal check."""
    chosen = [row for row in requests if start <= row["t"] < stop and row["status"] == 200]
    readings = [row for row in gauges if start <= row["t"] < stop]
    summary: dict[str, Any] = {"requests": len(chosen)}
    if chosen:
        summary["mean_width"] = statistics.fmean(row["width"] for row in chosen)
        summary["widths"] = {
            str(width): sum(row["width"] == width for row in chosen)
            for width in sorted({row["width"] for row in chosen})
        }
        summary["reasons"] = {
            reason: sum(row["reason"] == reason for row in chosen)
            for reason in sorted({row["reason"] for row in chosen})
        }
    for name in GAUGES:
        values = [row[name] for row in readings if name in row and row[name] == row[name]]  # drop NaN
        if values:
            summary[name] = statistics.fmean(values)
    summary["nvml"] = sampler.summary(start, stop)
    return summary
