"""Feed the hostile corpus to a real ``anysr serve`` process and watch its resident memory (psutil, 50 Hz)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.server.hostile_corpus import Sample

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "weights" / "anysr-edsr-liif.safetensors"


@dataclass
class FeedReport:
    answers: list[tuple[str, int, str]] = field(default_factory=list)
    baseline_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    seconds: float = 0.0
    weights: str = ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def feed_real_server(samples: list[Sample], extra_args: tuple[str, ...] = ()) -> FeedReport:
    """Start the server (shipped weights when present, else untrained), wait for readiness, post every sample
    once, and return each answer with the peak resident memory seen while they were fed."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    model = ["--weights", str(WEIGHTS)] if WEIGHTS.is_file() else ["--allow-untrained"]
    command = [sys.executable, "-m", "cli", "serve", "--port", str(port), *model, "--torch-threads", "2"]
    command += ["--log-level", "warning", *extra_args]
    report = FeedReport(weights=model[-1])
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited:\n{log.read().decode(errors='replace')}")
                time.sleep(0.2)
            watched = psutil.Process(process.pid)
            report.baseline_rss_mib = watched.memory_info().rss / 2**20
            peak = report.baseline_rss_mib
            stop = threading.Event()

            def sample_memory() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, watched.memory_info().rss / 2**20)
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample_memory, daemon=True)
            sampler.start()
            started = time.monotonic()
            with httpx.Client(timeout=120) as client:
                for sample in samples:
                    response = client.post(
                        f"{base}/upscale?{sample.query}",
                        content=sample.body,
                        headers={"content-type": sample.content_type},
                    )
                    try:
                        code = response.json()["error"]["code"]
                    except (ValueError, KeyError, TypeError):
                        code = f"<{response.headers.get('content-type')}>"
                    report.answers.append((sample.name, response.status_code, code))
            report.seconds = time.monotonic() - started
            stop.set()
            sampler.join()
            report.peak_rss_mib = peak
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return report
