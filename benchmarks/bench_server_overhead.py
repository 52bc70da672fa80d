"""Server overhead at low load: end-to-end latency minus model time, for a 256×256 ×2 PNG.

Starts ``anysr serve`` as a subprocess (the same code path as production: uvicorn, middleware,
decode, batcher, encode), waits for readiness, then sends requests one at a time over a keep-alive
connection. For each request:

- end-to-end latency: measured by the client (send → last byte received);
- model time: the server's ``Server-Timing`` ``compute`` entry (the batch's time on the inference
  thread; at low load a request is exactly one batch);
- overhead = end-to-end − model time (HTTP, upload, decode, planning, queue wait, stitch, encode,
  download). The target is ≤ 10% of model time.

Prints a table and writes JSON to ``benchmarks/results/server_overhead.json``. Without trained
weights pass ``--allow-untrained`` (random weights cost the same FLOPs, so timings are valid).
The functions here (image, server start/stop, the request loop, the summary) are also what
``python -m benchmarks.suite`` runs for its ``overhead`` and ``memory`` parts.

    python benchmarks/bench_server_overhead.py --allow-untrained --requests 20
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from loadtest.server_process import stop_server

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
_TIMING = re.compile(r"(\w+);dur=([0-9.]+)")
#: Quantities summarised per request (seconds), in table order.
QUANTITIES = ("end_to_end_s", "model_s", "overhead_s", "queue_s", "decode_s", "encode_s")


class ServerError(RuntimeError):
    """The benchmark server exited early or did not become ready in time (the message has its log's tail)."""


def shared_dir() -> Path:
    """``ANYSR_SHARED_DIR`` if set, else the ``shared`` folder beside the repository."""
    return Path(os.environ.get("ANYSR_SHARED_DIR", REPO / ".." / "shared"))


def bench_image(size: int) -> tuple[bytes, str]:
    """A ``size``² PNG and where it came from.

    A centre crop of Set14's baboon when the shared data is there (resized up first, bicubic, when the
    photo is smaller than ``size``), else a synthetic gradient with noise. Real photo content matters
    for the PNG decode and encode times, which are part of the overhead.
    """
    candidate = shared_dir() / "datasets" / "Set14" / "baboon.png"
    if candidate.is_file():
        photo = Image.open(candidate).convert("RGB")
        source = f"{candidate.name} centre crop"
        if min(photo.width, photo.height) < size:
            factor = size / min(photo.width, photo.height)
            resized = (max(size, round(photo.width * factor)), max(size, round(photo.height * factor)))
            photo = photo.resize(resized, Image.Resampling.BICUBIC)
            source = f"{candidate.name} resized to {resized[0]}x{resized[1]} (bicubic), centre crop"
        left, top = (photo.width - size) // 2, (photo.height - size) // 2
        image = photo.crop((left, top, left + size, top + size))
    else:
        rng = np.random.default_rng(0)
        ys, xs = np.mgrid[0:size, 0:size] / size
        smooth = np.stack([ys, xs, 0.5 + 0.5 * np.sin(12 * xs * ys)], axis=-1) * 200
        pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        image, source = Image.fromarray(pixels), "synthetic gradient + noise"
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue(), source


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_timing(header: str) -> dict[str, float]:
    """``Server-Timing`` → {name: seconds}."""
    return {name: float(value) / 1e3 for name, value in _TIMING.findall(header)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


@dataclass(frozen=True)
class ServerLaunch:
    """How to start the benchmark server: weights, threads and any extra ``anysr serve`` flags."""

    weights: str | None = None
    allow_untrained: bool = False
    torch_threads: int | None = None
    extra_args: tuple[str, ...] = ()
    ready_timeout_s: float = 300.0
    stop_timeout_s: float = 60.0

    def argv(self, port: int) -> list[str]:
        """The ``anysr serve`` command line; extra flags come last so they override ours."""
        command = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--log-level", "warning"]
        if self.weights:
            command += ["--weights", self.weights]
        if self.allow_untrained:
            command.append("--allow-untrained")
        if self.torch_threads:
            command += ["--torch-threads", str(self.torch_threads)]
        return command + list(self.extra_args)


@dataclass
class RunningServer:
    """A started, ready server: its base URL, process (for memory probes) and log."""

    base: str
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]


def _log_tail(log_path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout_s: float, log_path: Path) -> None:
    """Poll ``/readyz`` until 200; :class:`ServerError` if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(
                f"server exited with status {process.returncode} before becoming ready:\n{_log_tail(log_path)}"
            )
        try:
            if httpx.get(f"{base}/readyz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise ServerError(f"server not ready after {timeout_s:.0f} s:\n{_log_tail(log_path)}")


@contextlib.contextmanager
def running_server(launch: ServerLaunch, log_path: Path | None = None) -> Iterator[RunningServer]:
    """Start ``anysr serve`` on a free loopback port, yield it once ready, stop it on exit (errors too)."""
    port = free_port()
    log_path = log_path or Path(tempfile.gettempdir()) / f"anysr_bench_server_{port}.log"
    argv = launch.argv(port)
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            server = RunningServer(f"http://127.0.0.1:{port}", process, log_path, argv)
            wait_ready(server.base, process, launch.ready_timeout_s, log_path)
            yield server
        finally:
            stop_server(process, launch.stop_timeout_s)


def describe_model(base: str, size: tuple[int, int], scale: float) -> dict[str, Any]:
    """The server's ``/v1/model`` for an input of ``size`` (h, w) at ``scale``."""
    params = {"size": f"{size[0]}x{size[1]}", "scale": scale}
    response = httpx.get(f"{base}/v1/model", params=params, timeout=60, trust_env=False)
    response.raise_for_status()
    return response.json()


def time_requests(
    base: str, png: bytes, scale: float, width: float, requests: int, warmup: int, timeout_s: float = 3600
) -> list[dict[str, Any]]:
    """Send ``warmup`` then ``requests`` upscales one at a time at a forced ``width``; one row per timed one."""
    headers = {"content-type": "image/png", "x-anysr-budget": f"width={width}"}
    url = f"{base}/upscale?scale={scale}"
    rows = []
    with httpx.Client(timeout=timeout_s, trust_env=False) as client:
        for index in range(warmup + requests):
            started = time.perf_counter()
            response = client.post(url, content=png, headers=headers)
            end_to_end = time.perf_counter() - started
            response.raise_for_status()
            if index < warmup:
                continue
            timing = parse_timing(response.headers["server-timing"])
            rows.append(
                {
                    "end_to_end_s": end_to_end,
                    "model_s": timing["compute"],
                    "overhead_s": end_to_end - timing["compute"],
                    "queue_s": timing["queue"],
                    "decode_s": timing["decode"],
                    "encode_s": timing["encode"],
                    "server_total_s": timing["total"],
                    "flops": int(response.headers["x-anysr-flops"]),
                    "tiles": int(response.headers["x-anysr-tiles"]),
                    "response_bytes": len(response.content),
                }
            )
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median and p90 of every quantity, and of overhead / model time."""
    if not rows:
        raise ValueError("no timed requests to summarise; --requests must be >= 1")
    summary = {}
    for name in QUANTITIES:
        values = [row[name] for row in rows]
        summary[name] = {"median": statistics.median(values), "p90": percentile(values, 90)}
    ratio = [row["overhead_s"] / row["model_s"] for row in rows]
    summary["overhead_ratio"] = {"median": statistics.median(ratio), "p90": percentile(ratio, 90)}
    return summary


def print_summary(summary: dict[str, dict[str, float]]) -> None:
    print(f"{'quantity':<16}{'median ms':>12}{'p90 ms':>12}")
    for name in QUANTITIES:
        print(f"{name[:-2]:<16}{summary[name]['median'] * 1e3:>12.1f}{summary[name]['p90'] * 1e3:>12.1f}")
    print(
        f"{'overhead/model':<16}{summary['overhead_ratio']['median'] * 100:>11.1f}%"
        f"{summary['overhead_ratio']['p90'] * 100:>11.1f}%   (target <= 10%)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20, help="timed requests (sequential)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests first")
    parser.add_argument("--size", type=int, default=256, help="input side in pixels")
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--width", type=float, default=1.0, help="forced width (X-AnySR-Budget), for stable timings")
    parser.add_argument("--weights", default=None, help="weights file (default: the server's default)")
    parser.add_argument("--allow-untrained", action="store_true", help="serve random weights if none exist")
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for anysr serve (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS / "server_overhead.json")
    parser.add_argument("--ready-timeout-s", type=float, default=300)
    args = parser.parse_args()
    if args.requests < 1:
        parser.error(f"--requests must be >= 1, got {args.requests}")

    png, source = bench_image(args.size)
    launch = ServerLaunch(
        weights=args.weights,
        allow_untrained=args.allow_untrained,
        torch_threads=args.torch_threads,
        extra_args=tuple(args.server_arg),
        ready_timeout_s=args.ready_timeout_s,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    with running_server(launch) as server:
        model = describe_model(server.base, (args.size, args.size), args.scale)
        rows = time_requests(server.base, png, args.scale, args.width, args.requests, args.warmup)
        log_path = server.log_path
    load_after = os.getloadavg()

    summary = summarise(rows)
    print(f"server overhead, {args.size}x{args.size} PNG x{args.scale}, width {args.width}, {len(rows)} requests")
    print(f"image: {source}; model untrained: {model['untrained']}; device {model['device']} {model['precision']}")
    print_summary(summary)
    print(f"server log: {log_path}")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (other work on the host adds noise)")
    record = {
        "benchmark": "server_overhead",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            "size": args.size,
            "scale": args.scale,
            "width": args.width,
            "requests": args.requests,
            "warmup": args.warmup,
            "image": source,
            "server_args": args.server_arg,
            "torch_threads": args.torch_threads,
        },
        "model": {key: model[key] for key in ("untrained", "sha256", "parameters", "device", "precision", "tiling")},
        "host": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "summary": summary,
        "requests": rows,
    }
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
