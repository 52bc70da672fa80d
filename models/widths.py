"""Widths and the scale → width policy of the paper, declared once.

A model's width set belongs to the model (its encoder declares it: EDSR-baseline runs at 0.5/0.7/0.9/1.0,
RDN at 0.7/0.8/0.9/1.0, as the paper's code has them), so everything here takes the width set as an
argument and :data:`WIDTHS` is only the EDSR default. The four scale groups are the paper's and are shared
by every model. No torch here: the server's scheduler uses this module without loading a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The paper's EDSR-baseline widths, narrowest first: the default width set of a model.
WIDTHS: tuple[float, ...] = (0.5, 0.7, 0.9, 1.0)

#: Upper bounds (inclusive) of the scale groups S1..S3 on the continuous scale. The paper's groups are
#: the 0.1-grids 1.1–1.7, 1.8–2.5, 2.6–3.2, 3.3–4.0; our boundaries sit halfway between grid points.
SCALE_GROUP_BOUNDS: tuple[float, ...] = (1.75, 2.55, 3.25)

#: Number of scale groups (T in Algorithm 1).
GROUP_COUNT = len(SCALE_GROUP_BOUNDS) + 1

#: The paper's training scale grid per group (S_t in Algorithm 1), in tenths.
SCALE_GROUP_GRIDS: tuple[tuple[float, ...], ...] = (
    tuple(round(0.1 * t, 1) for t in range(11, 18)),
    tuple(round(0.1 * t, 1) for t in range(18, 26)),
    tuple(round(0.1 * t, 1) for t in range(26, 33)),
    tuple(round(0.1 * t, 1) for t in range(33, 41)),
)


def width_label(width: float) -> str:
    """How a width is written in headers, metric labels and reports: ``0.5``, ``0.7``, ``1.0`` (one decimal
    when that is exact, else as many as it needs, e.g. ``0.75``)."""
    if abs(width * 10 - round(width * 10)) < 1e-9:
        return f"{width:.1f}"
    return f"{width:g}"


def validate_widths(widths: Sequence[float]) -> tuple[float, ...]:
    """A width set as stored: sorted, distinct, each in (0, 1], ending at the full network (1.0).

    1.0 must be present because the full network is what Algorithm 1's reset trains and what a
    "full width" request means; a set without it would have no ‡ row.
    """
    values = tuple(sorted({float(width) for width in widths}))
    if not values or any(not 0.0 < width <= 1.0 for width in values):
        raise ValueError(f"widths must be numbers in (0, 1], got {list(widths)}")
    if abs(values[-1] - 1.0) > 1e-9:
        raise ValueError(f"widths must include the full network 1.0, got {list(values)}")
    return values


def check_width(width: float, widths: Sequence[float] = WIDTHS) -> float:
    """Return the member of ``widths`` equal to ``width``, else raise ``ValueError`` naming the allowed set."""
    for allowed in widths:
        if abs(width - allowed) < 1e-9:
            return allowed
    raise ValueError(f"width must be one of {tuple(widths)}, got {width}")


def channels_at(full_channels: int, width: float) -> int:
    """Channels a subnet of ``width`` uses out of ``full_channels``: floor(full · w), at least 1.

    The epsilon keeps e.g. 0.7 · 64 = 44.8 → 44 and 0.5 · 64 = 32 exact despite binary floats.
    """
    return max(1, int(math.floor(full_channels * width + 1e-9)))


def scale_group(scale: float) -> int:
    """Index (0..3) of the scale group a (max-side) scale falls into; scales above 4 count as group 3."""
    for index, bound in enumerate(SCALE_GROUP_BOUNDS):
        if scale <= bound:
            return index
    return len(SCALE_GROUP_BOUNDS)


def group_width(group: int, widths: Sequence[float] = WIDTHS) -> float:
    """The width scale group ``group`` runs at: the group-th narrowest of four widths.

    A set of four widths maps one to one (the paper's T = 4). A set of another size maps the groups onto
    it from the narrow end and gives every remaining group the widest, so a two-width model (0.5, 1.0)
    runs S1 at 0.5 and everything else at full width.
    """
    ordered = sorted(widths)
    return ordered[min(group, len(ordered) - 1)]


def width_for_scale(scale_h: float, scale_w: float | None = None, widths: Sequence[float] = WIDTHS) -> float:
    """The paper's scale-group width for an (optionally non-square) scale, decided by max(s_h, s_w)."""
    scale = max(scale_h, scale_w if scale_w is not None else scale_h)
    return group_width(scale_group(scale), widths)
