"""The width set and the scale → width policy of the paper, declared once.

Everything else in the project (trainer, scheduler, FLOPs model, CLI) imports these names instead of
repeating the numbers. No torch here: the server's scheduler uses this module without loading a model.
"""

from __future__ import annotations

import math

#: The four subnet widths of the shared-weight model, narrowest first.
WIDTHS: tuple[float, ...] = (0.5, 0.7, 0.9, 1.0)

#: Upper bounds (inclusive) of the scale groups S1..S3 on the continuous scale. The paper's groups are
#: the 0.1-grids 1.1–1.7, 1.8–2.5, 2.6–3.2, 3.3–4.0; our boundaries sit halfway between grid points.
SCALE_GROUP_BOUNDS: tuple[float, ...] = (1.75, 2.55, 3.25)

#: The paper's training scale grid per group (S_t in Algorithm 1), in tenths.
SCALE_GROUP_GRIDS: tuple[tuple[float, ...], ...] = (
    tuple(round(0.1 * t, 1) for t in range(11, 18)),
    tuple(round(0.1 * t, 1) for t in range(18, 26)),
    tuple(round(0.1 * t, 1) for t in range(26, 33)),
    tuple(round(0.1 * t, 1) for t in range(33, 41)),
)


def check_width(width: float) -> float:
    """Return ``width`` if it is one of :data:`WIDTHS`, else raise ``ValueError`` naming the allowed set."""
    for allowed in WIDTHS:
        if abs(width - allowed) < 1e-9:
            return allowed
    raise ValueError(f"width must be one of {WIDTHS}, got {width}")


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


def width_for_scale(scale_h: float, scale_w: float | None = None) -> float:
    """The paper's scale-group width for an (optionally non-square) scale, decided by max(s_h, s_w)."""
    scale = max(scale_h, scale_w if scale_w is not None else scale_h)
    return WIDTHS[scale_group(scale)]
