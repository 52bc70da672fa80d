"""The host's matrix-product peak, fp32 and bf16, measured in the same run as the parts it scales.

A part's GFLOP/s means little alone: 100 GFLOP/s is most of a 2-core AVX2 CPU and a rounding error on a
GPU. So the suite times square ``torch.mm`` in each precision on the device the parts run on, and
reports every part's achieved rate as a share of the peak of its own precision. Square products of a
few sizes are timed and the fastest is the peak: large enough that call overhead is negligible, small
enough that a CPU finishes one in well under a second (on CPUs without native bf16, bf16 products run
about 10x slower than fp32, so the repeats are bounded by time, not only by count). Each size's rate is
taken from its fastest run, since other work on a shared host can only slow a product down; the median
is kept beside it.

The peak is what ``torch.mm`` reaches, not the chip's datasheet number: it is the ceiling the model's
own products (oneDNN or cuBLAS underneath) can hope for on this host with these threads.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: Square sizes tried per device type; the fastest one gives the peak.
SIZES = {"cpu": (512, 1024, 2048), "cuda": (2048, 4096, 8192)}
#: Timed products per size: at least ``MIN_REPEATS``, then more until ``MIN_SECONDS`` have passed.
MIN_REPEATS = 3
MAX_REPEATS = 50
MIN_SECONDS = 0.3


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_matmul(size: int, dtype: torch.dtype, device: torch.device, min_seconds: float = MIN_SECONDS) -> list[float]:
    """Seconds of each timed ``size``² product (after one untimed one), at least MIN_REPEATS of them."""
    generator = torch.Generator().manual_seed(size)
    left = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    right = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype, device=device)
    torch.mm(left, right, out=out)
    _synchronise(device)
    runs: list[float] = []
    started = time.perf_counter()
    while len(runs) < MIN_REPEATS or (time.perf_counter() - started < min_seconds and len(runs) < MAX_REPEATS):
        begin = time.perf_counter()
        torch.mm(left, right, out=out)
        _synchronise(device)
        runs.append(time.perf_counter() - begin)
    return runs


def measure_peak(
    device: str | torch.device = "cpu",
    sizes: tuple[int, ...] | None = None,
    min_seconds: float = MIN_SECONDS,
) -> dict[str, Any]:
    """Peak GFLOP/s of square products per precision: ``{"fp32": {...}, "bf16": {...}, ...}``.

    Each precision's entry holds ``gflops_per_s`` (the best size's fastest run), the size it came from,
    and every size's best and median rate, so a reader can see the curve flatten and the noise.
    """
    device = torch.device(device)
    sizes = sizes or SIZES.get(device.type, SIZES["cpu"])
    result: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(), "sizes": list(sizes)}
    with torch.inference_mode():
        for name, dtype in DTYPES.items():
            per_size, medians = {}, {}
            for size in sizes:
                runs = time_matmul(size, dtype, device, min_seconds)
                per_size[size] = 2 * size**3 / min(runs) / 1e9
                medians[str(size)] = 2 * size**3 / statistics.median(runs) / 1e9
            best = max(per_size, key=per_size.__getitem__)
            result[name] = {
                "gflops_per_s": per_size[best],
                "size": best,
                "gflops_per_s_by_size": {str(size): rate for size, rate in per_size.items()},
                "median_gflops_per_s_by_size": medians,
            }
    return result


def peak_gflops(peak: dict[str, Any] | None, precision: str) -> float | None:
    """The peak of ``precision`` from :func:`measure_peak`'s result; fp16 counts as bf16 (same units on
    tensor cores); None when unknown."""
    if not peak:
        return None
    entry = peak.get("bf16" if precision == "fp16" else precision)
    return None if entry is None else float(entry["gflops_per_s"])
