"""A second process that keeps a device busy for a while: the competing load of the GPU-signal check.

    python -m benchmarks.gpu_hog --device cuda --seconds 12
    python -m benchmarks.gpu_hog --device cuda --seconds 12 --wait    # start on a line on stdin

On CUDA it runs back-to-back bf16 products of 8192² matrices (each ~1 ms on an H100-class card, so
NVML's utilisation, the share of time a kernel ran, reads near 100%). On a CPU (the benchmark's smoke
mode) it runs small fp32 products on one thread, which the server's CPU probe counts as other work.
It prints ``ready`` once set up (process start-up and CUDA initialisation take seconds; with
``--wait`` it then waits for a line on stdin, so a caller can start it early and release it on cue),
``busy`` when the load begins, and stops by itself after ``--seconds``, so a crashed caller cannot
leave it running long.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def hog(device: torch.device, seconds: float, wait: bool = False) -> int:
    """Run products until ``seconds`` have passed (after a line on stdin, with ``wait``); how many ran."""
    if device.type == "cuda":
        size, dtype = 8192, torch.bfloat16
    else:
        torch.set_num_threads(1)
        size, dtype = 256, torch.float32
    left = torch.randn(size, size, device=device).to(dtype)
    right = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(left, right, out=out)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    print("ready", flush=True)
    if wait:
        sys.stdin.readline()
    print("busy", flush=True)  # the caller times the busy phase from this line, not from the process start
    deadline = time.monotonic() + seconds
    count = 0
    with torch.inference_mode():
        while time.monotonic() < deadline:
            for _ in range(8):  # queue a few, then sync, so the stop time is honoured on a GPU too
                torch.mm(left, right, out=out)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            count += 8
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_hog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (%(default)s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to keep it busy (%(default)s)")
    parser.add_argument("--wait", action="store_true", help="after setting up, wait for a line on stdin")
    args = parser.parse_args(argv)
    count = hog(torch.device(args.device), args.seconds, args.wait)
    print(f"gpu_hog: {count} products on {args.device} in {args.seconds:g} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
