"""Which compute precision to run a model in: ``auto`` measures instead of assuming.

On CUDA, auto means bf16 (tensor cores; bf16's range needs no loss scaling). On a CPU it depends on the
chip: with native bf16 (AVX512-BF16 or AMX) bf16 runs the products ~2-3× faster than fp32, on plain
AVX2 about 10× slower. The flags alone do not settle it (oneDNN may still pick slow kernels for some
shapes), so auto runs a short probe: upscales of a photo-like tile at full width in each precision,
one untimed, then rounds alternating between the two, each precision's fastest run counting (on a host
shared with other work a single run can be slowed several-fold; alternating spreads that over both, and
the fastest run is the least disturbed). It picks bf16 only when it is clearly faster *and* close
enough to fp32.

"Close enough" is a bound on what bf16 can cost in PSNR against the ground truth. If fp32's output is
e dB from the truth (MSE m_e) and bf16 moves it by an independent error of MSE m_d, PSNR falls by
10·log10(1 + m_d/m_e). The trained models sit near 38 dB at ×2 (m_e ≈ 1.6e-4), so keeping that loss
under 0.05 dB needs m_d < 1.8e-6: bf16 within 57 dB of fp32. The probe measures exactly that on its tile.
The Set5/Set14 effect is measured too (benchmarks), where it is a few thousandths of a dB.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.anysr import AnySR

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: bf16 must be at least this much faster than fp32 on the probe to be chosen (noise margin).
MIN_SPEEDUP = 1.2
#: bf16 output must be at least this close to fp32's (PSNR between the two, dB): see the module docstring.
MIN_AGREEMENT_DB = 57.0
#: Probe tile: LR side and scale. 64² at ×2 is ~37 GFLOPs at full width on EDSR-baseline + LIIF, a
#: fraction of a second in bf16 on a 2-core CPU, and large enough that per-call overhead does not decide.
PROBE_SIZE = 64
PROBE_SCALE = 2.0
#: Timed rounds of the probe (each runs fp32 then bf16). One round, timed after a single warm-up, read
#: bf16 at 0.62x fp32's speed on an AMX CPU while other jobs ran (it is ~2.3x there); three agreed within 25%.
PROBE_ROUNDS = 3


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to run in, why, and what the probe measured (when it ran)."""

    precision: str
    reason: str
    probe: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]


def cpu_bf16_flags() -> list[str]:
    """The CPU's native-bf16 flags (``avx512_bf16``, ``amx_bf16``) from /proc/cpuinfo; [] elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return sorted(set(value.split()) & {"avx512_bf16", "amx_bf16"})
    return []


def choose_precision(model: AnySR, device: torch.device, requested: str = "auto") -> PrecisionChoice:
    """Resolve ``requested`` (auto, fp32, bf16 or fp16) for ``model`` on ``device``; may run the CPU probe."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "fp16" and device.type == "cpu":
        raise ValueError("precision 'fp16' needs a CUDA device; on CPU use 'fp32', 'bf16' or 'auto'")
    if requested != "auto":
        return PrecisionChoice(requested, "requested")
    if device.type == "cuda":
        return PrecisionChoice("bf16", "auto: bf16 on CUDA")
    flags = cpu_bf16_flags()
    native = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    if not flags or not native:
        return PrecisionChoice("fp32", "auto: fp32, this CPU has no native bf16 (no avx512_bf16 or amx_bf16)")
    probe = probe_bf16(model, device)
    probe["cpu_flags"] = flags
    speedup, agreement = probe["speedup"], probe["agreement_db"]
    measured = (
        f"bf16 {speedup:.2f}x fp32's speed, within {agreement:.1f} dB of it on a {PROBE_SIZE}² x{PROBE_SCALE:g} tile"
    )
    if speedup >= MIN_SPEEDUP and agreement >= MIN_AGREEMENT_DB:
        return PrecisionChoice("bf16", f"auto: {measured} ({', '.join(flags)})", probe)
    why = "not faster enough" if speedup < MIN_SPEEDUP else "not close enough to fp32"
    return PrecisionChoice("fp32", f"auto: fp32, bf16 {why}: {measured}", probe)


def probe_bf16(model: AnySR, device: torch.device, rounds: int = PROBE_ROUNDS) -> dict[str, Any]:
    """Time full-width upscales in fp32 and bf16 (one untimed each, then ``rounds`` alternating rounds; the
    fastest run of each counts) and compare the outputs."""
    lr = probe_image(PROBE_SIZE, device)
    out = (round(PROBE_SIZE * PROBE_SCALE),) * 2
    outputs = {name: model.upscale(lr, out, 1.0, compute_dtype=DTYPES[name]) for name in ("fp32", "bf16")}
    seconds = {name: math.inf for name in outputs}
    for _ in range(rounds):
        for name in outputs:
            started = time.perf_counter()
            model.upscale(lr, out, 1.0, compute_dtype=DTYPES[name])
            seconds[name] = min(seconds[name], time.perf_counter() - started)
    mse = float((outputs["bf16"] - outputs["fp32"]).square().mean())
    return {
        "fp32_s": seconds["fp32"],
        "bf16_s": seconds["bf16"],
        "speedup": seconds["fp32"] / max(seconds["bf16"], 1e-9),
        "agreement_db": math.inf if mse == 0 else -10 * math.log10(mse),
        "tile": [PROBE_SIZE, PROBE_SIZE],
        "scale": PROBE_SCALE,
        "rounds": rounds,
    }


def probe_image(size: int, device: torch.device) -> torch.Tensor:
    """A deterministic photo-like (1, 3, size, size) image: smooth shading, an edge and fine texture.

    Pure noise would make every model output flat grey (and bf16 look perfect); real images have
    structure at every scale, which is what the model's activations respond to.
    """
    axis = torch.linspace(0, 1, size)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    shading = 0.35 + 0.3 * torch.sin(3.1 * xs + 1.7 * ys)
    edge = 0.25 * (xs + 0.3 * ys > 0.6).float()
    texture = 0.08 * torch.sin(40 * xs) * torch.cos(33 * ys)
    rgb = torch.stack([shading + edge + texture, shading * 0.9 + texture, 0.8 - shading + 0.5 * edge])
    return rgb.clamp(0, 1)[None].to(device)
