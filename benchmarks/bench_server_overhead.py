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

    python benchmarks/bench_server_overhead.py --allow-untrained --requests 20
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
_TIMING = re.compile(r"(\w+);dur=([0-9.]+)")


def shared_dir() -> Path:
    """``ANYSR_SHARED_DIR`` if set, else the ``shared`` folder beside the repository."""
    return Path(os.environ.get("ANYSR_SHARED_DIR", REPO / ".." / "shared"))


def bench_image(size: int) -> tuple[bytes, str]:
    """A ``size``² PNG: a centre crop of a Set14 photo when the shared data is there, else a synthetic one."""
    candidate = shared_dir() / "datasets" / "Set14" / "baboon.png"
    if candidate.is_file():
        photo = Image.open(candidate).convert("RGB")
        left, top = (photo.width - size) // 2, (photo.height - size) // 2
        image, source = photo.crop((left, top, left + size, top + size)), f"{candidate.name} centre crop"
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


def start_server(args: argparse.Namespace, port: int, log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--log-level", "warning"]
    if args.weights:
        command += ["--weights", args.weights]
    if args.allow_untrained:
        command.append("--allow-untrained")
    if args.torch_threads:
        command += ["--torch-threads", str(args.torch_threads)]
    command += args.server_arg
    log = log_path.open("w")
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(base: str, process: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log_path.read_text().splitlines()[-20:])
            raise SystemExit(f"server exited with status {process.returncode} before becoming ready:\n{tail}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not ready after {timeout_s:.0f} s")


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

    png, source = bench_image(args.size)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(tempfile.gettempdir()) / f"anysr_bench_server_{port}.log"
    load_before = os.getloadavg()
    process = start_server(args, port, log_path)
    rows = []
    try:
        wait_ready(base, process, args.ready_timeout_s, log_path)
        model = httpx.get(f"{base}/v1/model", params={"size": f"{args.size}x{args.size}", "scale": args.scale}).json()
        headers = {"content-type": "image/png", "x-anysr-budget": f"width={args.width}"}
        url = f"{base}/upscale?scale={args.scale}"
        with httpx.Client(timeout=300) as client:
            for index in range(args.warmup + args.requests):
                started = time.perf_counter()
                response = client.post(url, content=png, headers=headers)
                end_to_end = time.perf_counter() - started
                response.raise_for_status()
                if index < args.warmup:
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
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    load_after = os.getloadavg()

    def column(name: str) -> list[float]:
        return [row[name] for row in rows]

    summary = {
        name: {"median": statistics.median(column(name)), "p90": percentile(column(name), 90)}
        for name in ("end_to_end_s", "model_s", "overhead_s", "queue_s", "decode_s", "encode_s")
    }
    ratio = [row["overhead_s"] / row["model_s"] for row in rows]
    summary["overhead_ratio"] = {"median": statistics.median(ratio), "p90": percentile(ratio, 90)}
    print(f"server overhead, {args.size}x{args.size} PNG x{args.scale}, width {args.width}, {len(rows)} requests")
    print(f"image: {source}; model untrained: {model['untrained']}; device {model['device']} {model['precision']}")
    print(f"{'quantity':<16}{'median ms':>12}{'p90 ms':>12}")
    for name in ("end_to_end_s", "model_s", "overhead_s", "queue_s", "decode_s", "encode_s"):
        print(f"{name[:-2]:<16}{summary[name]['median'] * 1e3:>12.1f}{summary[name]['p90'] * 1e3:>12.1f}")
    print(
        f"{'overhead/model':<16}{summary['overhead_ratio']['median'] * 100:>11.1f}%"
        f"{summary['overhead_ratio']['p90'] * 100:>11.1f}%   (target <= 10%)"
    )
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
