"""Command-line pieces shared by ``anysr info``, ``anysr flops`` and ``anysr upscale``.

Parsing and validating sizes, scales and widths, and the default weights path. Only the standard
library and torch-free model modules (:mod:`models.widths`, :mod:`models.geometry`) at import time, so
``anysr --help`` stays quick.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from models.geometry import output_side
from models.widths import SCALE_GROUP_BOUNDS, check_width, scale_group, width_for_scale

#: The shipped weights, beside the package (the training issue writes them; absent until then).
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "anysr-edsr-liif.safetensors"

#: Scales accepted without ``--allow-any-scale``: (1, 8]. The model is trained on (1, 4]; up to 8 it
#: extrapolates as LIIF does, beyond that outputs get huge for little gain.
MIN_SCALE = 1.0
MAX_SCALE = 8.0

#: Default cap on output pixels (4096 × 4096): bounds memory and a CPU run to minutes.
DEFAULT_MAX_OUTPUT_PIXELS = 4096 * 4096


class CliError(Exception):
    """A problem with what the user asked for; the command prints it and exits with status 2."""


@dataclass(frozen=True)
class ScalePlan:
    """The scale pair the model is conditioned on and the output size it produces."""

    scale_h: float
    scale_w: float
    out_h: int
    out_w: int

    @property
    def max_scale(self) -> float:
        return max(self.scale_h, self.scale_w)


@dataclass(frozen=True)
class WidthChoice:
    """The width a run uses and why (``forced`` by --width, or the scale group's width)."""

    width: float
    reason: str


def parse_size(text: str) -> tuple[int, int]:
    """``"256x192"`` → (256, 192) as (height, width); ``"256"`` → (256, 256). For argparse ``type=``."""
    pieces = text.lower().replace("×", "x").split("x")
    if len(pieces) not in (1, 2):
        raise argparse.ArgumentTypeError(f"size must be HxW (e.g. 256x256), got {text!r}")
    try:
        values = [int(piece) for piece in pieces]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW with integer sides (e.g. 256x256), got {text!r}") from None
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"size sides must be >= 1, got {text!r}")
    return (values[0], values[-1])


def parse_width(text: str) -> float | None:
    """A width in (0, 1], or ``auto`` (→ ``None``: the scale group decides). For argparse ``type=``.

    Whether the model runs at that width is checked once the model is known (:func:`choose_width`).
    """
    if text.strip().lower() == "auto":
        return None
    try:
        width = float(text)
    except ValueError:
        width = math.nan
    if not 0.0 < width <= 1.0:
        raise argparse.ArgumentTypeError(
            f"width must be a number in (0, 1] (one of the model's widths) or auto, got {text!r}"
        )
    return width


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scale``, ``--scale-h``/``--scale-w`` (per-axis overrides) and ``--out HxW`` (scales from sizes)."""
    group = parser.add_argument_group("scale (give --scale, --scale-h/--scale-w, or --out)")
    group.add_argument("--scale", type=float, help="upscaling factor for both axes, e.g. 2.3")
    group.add_argument("--scale-h", type=float, help="vertical factor (overrides --scale for the height)")
    group.add_argument("--scale-w", type=float, help="horizontal factor (overrides --scale for the width)")
    group.add_argument("--out", dest="out_size", type=parse_size, metavar="HxW", help="output size instead of a scale")
    group.add_argument(
        "--allow-any-scale",
        action="store_true",
        help=f"accept any positive scale, not only ({MIN_SCALE:g}, {MAX_SCALE:g}]",
    )


def plan_scale(args: argparse.Namespace, lr_size: tuple[int, int]) -> ScalePlan:
    """Turn the scale arguments into a :class:`ScalePlan` for an LR image of ``lr_size`` (h, w).

    With a scale, the output side follows :func:`models.geometry.output_side` (the server's and
    evaluation's rule) and the model is conditioned on the scale as given; with ``--out`` the scales are
    the size ratios. Raises :class:`CliError`.
    """
    height, width = lr_size
    if args.out_size is not None:
        if any(value is not None for value in (args.scale, args.scale_h, args.scale_w)):
            raise CliError("give either --out or a scale (--scale, --scale-h/--scale-w), not both")
        out_h, out_w = args.out_size
        scale_h, scale_w = out_h / height, out_w / width
    else:
        scale_h = args.scale_h if args.scale_h is not None else args.scale
        scale_w = args.scale_w if args.scale_w is not None else args.scale
        if scale_h is None or scale_w is None:
            raise CliError("give a scale: --scale S, or both --scale-h and --scale-w, or --out HxW")
        for axis, value in (("height", scale_h), ("width", scale_w)):
            if not math.isfinite(value) or value <= 0:
                raise CliError(f"scale along the {axis} must be a positive number, got {value}")
        out_h, out_w = output_side(height, scale_h), output_side(width, scale_w)
    for axis, value in (("height", scale_h), ("width", scale_w)):
        if not args.allow_any_scale and not MIN_SCALE < value <= MAX_SCALE:
            raise CliError(
                f"scale along the {axis} must be in ({MIN_SCALE:g}, {MAX_SCALE:g}], got {value:.4g}"
                " (pass --allow-any-scale to go outside)"
            )
    return ScalePlan(scale_h=scale_h, scale_w=scale_w, out_h=out_h, out_w=out_w)


def choose_width(requested: float | None, plan: ScalePlan, widths: tuple[float, ...]) -> WidthChoice:
    """The forced width (one of the model's ``widths``), or the width of the scale group ``max(s_h, s_w)``
    falls in, with the reason. Raises :class:`CliError` for a width the model does not have."""
    if requested is not None:
        try:
            return WidthChoice(width=check_width(requested, widths), reason="forced by --width")
        except ValueError:
            raise CliError(
                f"width {requested:g} is not one this model runs at: {', '.join(map(str, widths))}"
            ) from None
    width = width_for_scale(plan.scale_h, plan.scale_w, widths)
    return WidthChoice(width=width, reason=f"auto: scale {plan.max_scale:.4g} is in {describe_group(plan.max_scale)}")


def describe_group(scale: float) -> str:
    """``"scale group S2 (1.75, 2.55]"`` for the group ``scale`` falls in."""
    index = scale_group(scale)
    if index == 0:
        return f"scale group S1 (<= {SCALE_GROUP_BOUNDS[0]:g})"
    if index == len(SCALE_GROUP_BOUNDS):
        return f"scale group S{index + 1} (> {SCALE_GROUP_BOUNDS[-1]:g})"
    return f"scale group S{index + 1} ({SCALE_GROUP_BOUNDS[index - 1]:g}, {SCALE_GROUP_BOUNDS[index]:g}]"


def gflops(flops: int) -> str:
    """FLOPs as GFLOPs with two decimals (1 MAC = 2 FLOPs throughout the project)."""
    return f"{flops / 1e9:.2f}"
