"""MATLAB-compatible bicubic resizing (``imresize(..., 'bicubic')`` with antialiasing), in torch.

The SR literature makes LR images with MATLAB's imresize, whose downscaling widens the cubic kernel by
1/scale (antialiasing) and mirrors the border. PIL's BICUBIC uses the same a = -0.5 kernel but renormalises
truncated taps at the border instead of mirroring, runs the passes in the other order and rounds with
fixed-point weights, so its pixels differ (by up to several levels at the border); training and evaluation
both use this module so that our LR images are the ones the literature's MATLAB scripts make.

Each axis is a dense (out, in) weight matrix, so resizing is two matrix products: exact, batched,
differentiable, and fast enough for training crops and benchmark images on a CPU.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    absx = x.abs()
    absx2 = absx * absx
    absx3 = absx2 * absx
    near = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return near + far


@lru_cache(maxsize=256)
def _weight_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """(out_len, in_len) float64 matrix mapping one axis, following MATLAB's ``contributions``."""
    kernel_width = 4.0
    shrink = antialias and scale < 1
    if shrink:
        kernel_width /= scale
    # MATLAB works 1-based: output pixel x maps to input position u.
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(scale * distance) if shrink else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric ("mirror") border: index sequence 1..n, n..1 repeated.
    zero_based = (indices - 1).long()
    period = 2 * in_len
    folded = torch.remainder(zero_based, period)
    folded = torch.where(folded >= in_len, period - 1 - folded, folded)
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, folded, weights)
    return matrix


def resize_matrices(
    in_size: tuple[int, int], out_size: tuple[int, int], antialias: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (rows, columns) weight matrices for resizing ``in_size`` (h, w) to ``out_size`` (H, W)."""
    rows = _weight_matrix(in_size[0], out_size[0], out_size[0] / in_size[0], antialias)
    cols = _weight_matrix(in_size[1], out_size[1], out_size[1] / in_size[1], antialias)
    return rows, cols


def imresize(
    image: torch.Tensor,
    out_size: tuple[int, int] | None = None,
    scale: float | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize ``image`` (..., H, W) like MATLAB ``imresize(image, scale|[h w], 'bicubic')``.

    Give either ``out_size`` (per-axis scale = out / in, as MATLAB does for a size argument) or ``scale``
    (output size ceil(in · scale), the same scale on both axes). Float input stays float and is not
    clipped; round and clamp yourself to emulate a uint8 result (see :func:`imresize_uint8`).
    """
    height, width = image.shape[-2:]
    if (out_size is None) == (scale is None):
        raise ValueError("give exactly one of out_size or scale")
    if out_size is None:
        assert scale is not None
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out_size = (math.ceil(height * scale), math.ceil(width * scale))
        row_scale = col_scale = scale
    else:
        if out_size[0] < 1 or out_size[1] < 1:
            raise ValueError(f"out_size must be positive, got {out_size}")
        row_scale, col_scale = out_size[0] / height, out_size[1] / width
    rows = _weight_matrix(height, out_size[0], row_scale, antialias)
    cols = _weight_matrix(width, out_size[1], col_scale, antialias)
    dtype = image.dtype if image.is_floating_point() else torch.float32
    work = image.to(torch.float64)
    out = torch.matmul(torch.matmul(rows.to(image.device), work), cols.to(image.device).T)
    return out.to(dtype)


def imresize_uint8(image: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Resize a uint8 image (..., H, W) to ``out_size`` exactly as MATLAB ``imresize`` does for uint8 input.

    MATLAB resizes one axis at a time and its per-axis kernel returns the input's class, so a uint8 image
    is rounded (half away from zero) and saturated to 0..255 after *each* pass, not only at the end. The
    axis with the smaller scale goes first (MATLAB sorts the scales; rows first on a tie). Skipping the
    intermediate rounding changes 10-15% of the pixels by one level, which is why the benchmark LR
    images and our training LR come from this function rather than from :func:`imresize` plus a round.
    """
    if image.dtype != torch.uint8:
        raise TypeError(f"imresize_uint8 expects a uint8 image, got {image.dtype}")
    if out_size[0] < 1 or out_size[1] < 1:
        raise ValueError(f"out_size must be positive, got {out_size}")
    height, width = image.shape[-2:]
    rows, cols = resize_matrices((height, width), out_size)
    rows, cols = rows.to(image.device), cols.to(image.device)
    work = image.to(torch.float64)
    if out_size[0] / height <= out_size[1] / width:
        work = _round_to_uint8_levels(torch.matmul(rows, work))
        work = _round_to_uint8_levels(torch.matmul(work, cols.T))
    else:
        work = _round_to_uint8_levels(torch.matmul(work, cols.T))
        work = _round_to_uint8_levels(torch.matmul(rows, work))
    return work.to(torch.uint8)


def _round_to_uint8_levels(values: torch.Tensor) -> torch.Tensor:
    """MATLAB's float → uint8 conversion, kept in float64: round half away from zero, saturate to 0..255.

    (torch.round rounds half to even; for values >= 0 floor(x + 0.5) is MATLAB's rule, and anything
    negative saturates to 0 either way.)
    """
    return torch.floor(values + 0.5).clamp_(0, 255)
