"""The one rule for output sizes, shared by the server, the CLI and evaluation, and the one way a flat
block of output pixels maps back onto the output grid (every grid decoder decodes in flat blocks).

An upscale of an ``n``-pixel side by ``s`` produces ``round(n · s)`` pixels: the nearest integer, ties to
even (Python's ``round``, which is how LIIF's and ArbSR's data code size their HR crops, so evaluation
keeps their protocol), and at least 1. So a 5-pixel side at ×2.5 gives 12 and a 7-pixel side gives 18.
The scale a model is conditioned on stays the requested one; :func:`effective_scale` is what the pixels
actually got, which is what range checks must look at (``scale=1.0001`` on 48 pixels still gives 48).
No torch here.
"""

from __future__ import annotations

import math


def output_side(lr_side: int, scale: float) -> int:
    """Output pixels along one axis: ``round(lr_side · scale)``, ties to even, at least 1."""
    if lr_side < 1:
        raise ValueError(f"input side must be >= 1, got {lr_side}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale}")
    return max(1, round(lr_side * scale))


def output_size(lr_size: tuple[int, int], scale: tuple[float, float]) -> tuple[int, int]:
    """(H, W) of upscaling an (h, w) input by (s_h, s_w)."""
    return output_side(lr_size[0], scale[0]), output_side(lr_size[1], scale[1])


def effective_scale(lr_size: tuple[int, int], out_size: tuple[int, int]) -> tuple[float, float]:
    """The scale the pixels really got, (H / h, W / w), after rounding."""
    return out_size[0] / lr_size[0], out_size[1] / lr_size[1]


def row_segments(start: int, stop: int, row_length: int) -> list[tuple[int, int, int, int]]:
    """Flat positions ``start:stop`` of a row-major grid as at most three rectangles (row_start, row_stop,
    column_start, column_stop), in flat order: a partial first row, whole rows, a partial last row.

    Grid decoders fill a flat block of queries; splitting it this way lets them work on whole rows
    (one contiguous slice each) instead of gathering pixel by pixel.
    """
    segments = []
    row, column = divmod(start, row_length)
    if column:
        end = min(row_length, column + stop - start)
        segments.append((row, row + 1, column, end))
        start += end - column
        row += 1
    whole = (stop - start) // row_length
    if whole:
        segments.append((row, row + whole, 0, row_length))
        start += whole * row_length
        row += whole
    if start < stop:
        segments.append((row, row + 1, 0, stop - start))
    return segments
