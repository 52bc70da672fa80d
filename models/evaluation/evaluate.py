"""Benchmark evaluation: PSNR/SSIM of the model at each scale and width, beside MATLAB bicubic.

Protocol (state it with every number; ``PROTOCOL`` below is what the reports print):

1. HR image: the PNG as stored, as 8-bit RGB (grayscale repeated to three channels).
2. For a scale (s_h, s_w): LR size h = floor(H / s_h), w = floor(W / s_w); the HR image is cropped at its
   top-left corner to round(h · s_h) × round(w · s_w) (Python's round, as LIIF). For an integer scale that
   is the usual "crop to a multiple of the scale" and the LR is exactly 1/s of it; for a fractional one it
   is LIIF's ``SRImplicitDownsampled`` rule, so the crop keeps the ratio as close to s as pixels allow.
3. LR = MATLAB ``imresize(hr, [h w], 'bicubic')`` on uint8 (antialiased, 8-bit result, as a stored LR PNG).
4. The model upscales the LR to exactly the HR crop's size, told the nominal scale (s_h, s_w) (the value
   training used), in fp32 unless asked otherwise; its output is rounded to 8 bits, as the service returns it.
   The bicubic row is MATLAB ``imresize`` of the same LR to the same size.
5. PSNR and SSIM on Y with ceil(s) border pixels shaved per axis (:mod:`models.evaluation.metrics`); a dataset's number is
   the mean over its images.

How this compares with published numbers: bicubic on Set5 ×2/×3/×4 reads 33.67 / 30.40 / 28.43 dB against
the literature's MATLAB 33.66 / 30.39 / 28.42 (MATLAB rounds Y to 8 bits; we keep it float, as LIIF does).
Set14's ``bridge.png`` is grayscale: like LIIF/EDSR's Python evaluation we score it through the Y formula,
where MATLAB scripts score the raw gray values; Y = 16/255 + (219/255)·gray scales every error by 219/255,
i.e. +1.32 dB on that image and +0.094 dB on any Set14 mean (bicubic 30.32 / 27.63 / 26.09 here against
the MATLAB 30.24 / 27.55 / 26.00). Compare with LIIF's tables as is; subtract 0.094 for VDSR-era tables.

Each LR is encoded once per width it is evaluated at; the ``auto`` row reuses the result of the scale's
group width instead of running the model again. Nothing here prints: callers get a progress callback.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from models.anysr import AnySR
from models.evaluation.metrics import psnr, scored_luma, ssim
from models.flops import count_flops
from models.geometry import output_side
from models.images import load_image
from models.prefix import parameters_used as _parameters_used
from models.resize import imresize_uint8
from models.widths import WIDTHS, check_width, width_for_scale, width_label

PROTOCOL = (
    "HR cropped top-left to round(floor(H/s)*s); LR = MATLAB imresize bicubic (uint8) to floor(H/s) x floor(W/s); "
    "model told the nominal scale, output rounded to 8 bits; PSNR/SSIM on Y (BT.601, float), "
    "ceil(s) border shaved per axis; SSIM: 11x11 Gaussian sigma 1.5, valid windows; mean over images"
)

ScalePair = tuple[float, float]
#: A row of the results: a fixed width, or ``AUTO`` (the scale-group width, the paper's †).
WidthMode = float | str
AUTO = "auto"
BICUBIC = "bicubic"


def scale_label(scale: ScalePair) -> str:
    """``"2"``, ``"1.5"`` or ``"1.5x2.5"``: how reports name a scale."""
    square = f"{scale[0]:g}"
    return square if abs(scale[0] - scale[1]) < 1e-9 else f"{scale[0]:g}x{scale[1]:g}"


def row_label(mode: WidthMode) -> str:
    """``"bicubic"``, ``"auto"`` or ``"w=0.7"``."""
    return mode if isinstance(mode, str) else f"w={width_label(mode)}"


def degrade(hr: torch.Tensor, scale: ScalePair) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR crop, LR) for one uint8 image (3, H, W) and scale (s_h, s_w), per the module's protocol."""
    if scale[0] < 1.0 or scale[1] < 1.0:
        raise ValueError(f"scales must be >= 1, got {scale}")
    height, width = hr.shape[-2:]
    # The 1e-9 keeps e.g. 300 / 3.0000000000000004 from flooring to 99.
    lr_h = math.floor(height / scale[0] + 1e-9)
    lr_w = math.floor(width / scale[1] + 1e-9)
    if lr_h < 1 or lr_w < 1:
        raise ValueError(f"a {height}x{width} image is too small for scale {scale_label(scale)}")
    crop = hr[..., : output_side(lr_h, scale[0]), : output_side(lr_w, scale[1])]
    return crop, imresize_uint8(crop, (lr_h, lr_w))


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] → the [0, 1] values an 8-bit file would hold (round half up)."""
    return torch.floor(image.clamp(0, 1) * 255 + 0.5) / 255


@dataclass(frozen=True)
class ImageScore:
    """One image at one scale for one row (a width mode or bicubic)."""

    dataset: str
    image: str
    scale: ScalePair
    row: str
    #: Width the model ran at (None for bicubic); for ``auto`` the scale group's width.
    width: float | None
    psnr: float
    ssim: float
    #: Wall time of the upscale that produced it (shared by the ``auto`` row and its fixed-width twin).
    seconds: float


@dataclass(frozen=True)
class SummaryRow:
    """Mean scores of one row over one dataset's images at one scale."""

    dataset: str
    scale: ScalePair
    row: str
    width: float | None
    psnr: float
    ssim: float
    images: int
    seconds: float


@dataclass(frozen=True)
class EvalProgress:
    """Passed to the progress callback after every upscale (model or bicubic)."""

    done: int
    total: int
    score: ImageScore


def mode_width(mode: WidthMode, scale: ScalePair, widths: Sequence[float] = WIDTHS) -> float:
    """The width a row runs at: the scale group's for ``auto``, else the fixed width (one of ``widths``)."""
    return width_for_scale(*scale, widths=widths) if mode == AUTO else check_width(float(mode), widths)


def widths_needed(modes: Sequence[WidthMode], scale: ScalePair, widths: Sequence[float] = WIDTHS) -> list[float]:
    """The distinct widths the model must run at for ``scale``: fixed widths plus the group width for auto."""
    return sorted({mode_width(mode, scale, widths) for mode in modes})


def evaluate(
    model: AnySR | None,
    datasets: Mapping[str, Sequence[Path]],
    scales: Sequence[ScalePair],
    modes: Sequence[WidthMode],
    bicubic: bool = True,
    compute_dtype: torch.dtype = torch.float32,
    progress: Callable[[EvalProgress], None] | None = None,
) -> list[ImageScore]:
    """Score every image of ``datasets`` (name → image paths) at every scale, per width mode and bicubic.

    ``model`` may be None when ``modes`` is empty (bicubic only); it runs on its own device. Returns one
    :class:`ImageScore` per (image, scale, row); ``progress`` hears about every upscale actually run.
    """
    if modes and model is None:
        raise ValueError("a model is needed to evaluate width modes; pass modes=() for bicubic only")
    if not modes and not bicubic:
        raise ValueError("nothing to evaluate: no width modes and no bicubic row")
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    widths = model.widths if model is not None else WIDTHS
    runs_per_image = sum(len(widths_needed(modes, scale, widths)) + int(bicubic) for scale in scales)
    total = runs_per_image * sum(len(paths) for paths in datasets.values())
    scores: list[ImageScore] = []
    done = 0

    def ran(score: ImageScore) -> ImageScore:
        nonlocal done
        done += 1
        if progress is not None:
            progress(EvalProgress(done, total, score))
        return score

    for dataset, paths in datasets.items():
        for path in paths:
            image = load_image(path)
            for scale in scales:
                hr, lr = degrade(image, scale)
                out_size = (int(hr.shape[-2]), int(hr.shape[-1]))
                reference = _Reference(dataset, path.name, scale, scored_luma(hr.to(torch.float64) / 255, scale))
                if bicubic:
                    started = time.perf_counter()
                    upscaled = imresize_uint8(lr, out_size).to(torch.float64) / 255
                    scores.append(ran(reference.score(upscaled, BICUBIC, None, time.perf_counter() - started)))
                by_width: dict[float, ImageScore] = {}
                lr_float = lr.to(device=device, dtype=torch.float32)[None] / 255
                for width in widths_needed(modes, scale, widths):
                    assert model is not None
                    started = time.perf_counter()
                    output = model.upscale(lr_float, out_size, width, scale, compute_dtype=compute_dtype)
                    seconds = time.perf_counter() - started
                    output = quantize(output[0].float()).cpu()
                    by_width[width] = ran(reference.score(output, row_label(width), width, seconds))
                for mode in modes:
                    width = mode_width(mode, scale, widths)
                    scores.append(dataclasses.replace(by_width[width], row=row_label(mode)))
    return scores


@dataclass(frozen=True)
class _Reference:
    """The HR side of one (image, scale): what every row's output is scored against."""

    dataset: str
    image: str
    scale: ScalePair
    #: Shaved Y of the HR crop (:func:`models.evaluation.metrics.scored_luma`), computed once.
    luma: torch.Tensor

    def score(self, output: torch.Tensor, row: str, width: float | None, seconds: float) -> ImageScore:
        """Score ``output`` (3, H, W) in [0, 1] against the HR crop."""
        predicted = scored_luma(output, self.scale)
        return ImageScore(
            dataset=self.dataset,
            image=self.image,
            scale=self.scale,
            row=row,
            width=width,
            psnr=psnr(predicted, self.luma),
            ssim=ssim(predicted, self.luma),
            seconds=seconds,
        )


def summarise(scores: Sequence[ImageScore]) -> list[SummaryRow]:
    """Mean PSNR, SSIM and time per (dataset, scale, row), in first-seen order."""
    groups: dict[tuple[str, ScalePair, str], list[ImageScore]] = {}
    for score in scores:
        groups.setdefault((score.dataset, score.scale, score.row), []).append(score)
    rows = []
    for (dataset, scale, row), members in groups.items():
        widths = {member.width for member in members}
        rows.append(
            SummaryRow(
                dataset=dataset,
                scale=scale,
                row=row,
                width=widths.pop() if len(widths) == 1 else None,
                psnr=sum(member.psnr for member in members) / len(members),
                ssim=sum(member.ssim for member in members) / len(members),
                images=len(members),
                seconds=sum(member.seconds for member in members) / len(members),
            )
        )
    return rows


@dataclass(frozen=True)
class SubnetCost:
    """What one width costs at one scale: parameters it reads and FLOPs for a reference output size."""

    width: float
    parameters: int
    flops: int


def parameters_used(model: AnySR, width: float) -> int:
    """Parameters a forward pass at ``width`` reads (all of them at full width)."""
    return _parameters_used(model, model.check_width(width))


def subnet_cost(model: AnySR, scale: ScalePair, width: float, out_size: tuple[int, int]) -> SubnetCost:
    """Cost of upscaling to a fixed ``out_size`` at ``scale`` (LR = round(out / s)), as the paper's Table 3
    measures it ("consistent pixel size for upsampling SR images on all scales")."""
    lr_size = (max(1, round(out_size[0] / scale[0])), max(1, round(out_size[1] / scale[1])))
    flops = count_flops(model, lr_size, out_size, width).total
    return SubnetCost(width=width, parameters=parameters_used(model, width), flops=flops)
