"""Image-quality metrics in the SR literature's convention: PSNR and SSIM on the luma (Y) channel.

- Y is ITU-R BT.601 luma as MATLAB's ``rgb2ycbcr`` computes it, kept in float (no rounding to 8 bits, as
  LIIF/EDSR's Python evaluation does): Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B in [0, 1],
  so Y lies in [16/255, 235/255] and PSNR uses a peak of 1.
- A border is shaved before either metric, because every method guesses the pixels next to the image edge.
  For a scale s the border is ceil(s) pixels along that axis (per axis for a non-square scale): exactly s
  for the integer scales of the published tables (LIIF's ``shave = scale``), and the next whole pixel above
  a fractional scale, which never shaves less than the region the edge influences.
- SSIM is Wang et al. (2004) as their MATLAB ``ssim_index`` and the SR literature compute it: an 11 × 11
  Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, dynamic range L of the data (255 for 8-bit, 1 here),
  statistics over 'valid' windows only (no padding) and no automatic downsampling; the mean of the map.

Everything runs in float64 on whatever device the tensors are on; nothing here knows about models.
"""

from __future__ import annotations

import math

import torch

#: MATLAB ``rgb2ycbcr`` luma row for R, G, B in [0, 1], and its offset, both in [0, 255] units.
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0

#: Wang et al.'s SSIM constants and window.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """Luma of ``image`` (..., 3, H, W) in [0, 1] as (..., H, W) float64 in [16/255, 235/255]."""
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(f"expected an RGB image shaped (..., 3, H, W), got {tuple(image.shape)}")
    rgb = image.to(torch.float64)
    weights = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=image.device)
    return (torch.einsum("...chw,c->...hw", rgb, weights) + _Y_OFFSET) / 255.0


def shave_for_scale(scale: tuple[float, float]) -> tuple[int, int]:
    """Border (rows, columns) shaved for ``scale`` (s_h, s_w): ceil of each, so exactly s for integer s.

    The 1e-9 keeps a scale like 3.0000000001 (from 0.1-step arithmetic) at 3, not 4.
    """
    if scale[0] <= 0 or scale[1] <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return math.ceil(scale[0] - 1e-9), math.ceil(scale[1] - 1e-9)


def shave(image: torch.Tensor, border: tuple[int, int]) -> torch.Tensor:
    """``image`` (..., H, W) without ``border`` (rows, columns) pixels on each side."""
    rows, cols = border
    height, width = image.shape[-2:]
    if rows < 0 or cols < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if height <= 2 * rows or width <= 2 * cols:
        raise ValueError(f"a {height}x{width} image has nothing left after shaving {rows} rows and {cols} columns")
    return image[..., rows : height - rows, cols : width - cols]


def psnr(prediction: torch.Tensor, target: torch.Tensor, peak: float = 1.0) -> float:
    """PSNR in dB of two same-shaped tensors whose values span [0, ``peak``]; ``inf`` when they are equal."""
    _check_same_shape(prediction, target)
    mse = float(torch.mean((prediction.to(torch.float64) - target.to(torch.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian (size,) whose outer product is MATLAB's ``fspecial('gaussian', size, sigma)``."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    line = torch.exp(-(offsets**2) / (2 * sigma * sigma))
    return line / line.sum()


def ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean SSIM of two single-channel images (H, W) (Wang et al., 'valid' 11 × 11 Gaussian windows).

    ``data_range`` is L in C1 = (K1 L)², C2 = (K2 L)²: 1 for images in [0, 1] (255 for 8-bit values).
    The 2-D window is separable, so local means are two 1-D passes of 11 shifted multiply-adds each, over
    the five maps x, y, x², y², xy at once (torch's float64 conv2d unfolds every tap into a copy of the
    image, which is ~50x slower on a CPU).
    """
    _check_same_shape(prediction, target)
    if prediction.dim() != 2:
        raise ValueError(f"ssim expects single-channel images shaped (H, W), got {tuple(prediction.shape)}")
    if min(prediction.shape) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(prediction.shape)}")
    line = gaussian_window().to(prediction.device)
    x = prediction.to(torch.float64)
    y = target.to(torch.float64)
    maps = torch.stack([x, y, x * x, y * y, x * y])
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = _valid_filter(_valid_filter(maps, line, -2), line, -1)
    var_x = mean_xx - mu_x * mu_x
    var_y = mean_yy - mu_y * mu_y
    cov_xy = mean_xy - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return float((numerator / denominator).mean())


def _valid_filter(images: torch.Tensor, line: torch.Tensor, dim: int) -> torch.Tensor:
    """Correlate ``images`` with the 1-D ``line`` along ``dim``, keeping only fully covered positions."""
    taps = line.numel()
    length = images.shape[dim] - taps + 1
    out = images.narrow(dim, 0, length) * line[0]
    for tap in range(1, taps):
        out.add_(images.narrow(dim, tap, length), alpha=float(line[tap]))
    return out


def scored_luma(image: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """What both metrics compare: the Y channel (H', W') of an RGB ``image`` (3, H, W), border shaved for ``scale``.

    Computed once per HR image and scale by the evaluation, then compared with every method's output.
    """
    return shave(rgb_to_y(image), shave_for_scale(scale))


def psnr_ssim_y(prediction: torch.Tensor, target: torch.Tensor, scale: tuple[float, float]) -> tuple[float, float]:
    """(PSNR dB, SSIM) of two RGB images (3, H, W) in [0, 1] on Y, after shaving the border for ``scale``."""
    _check_same_shape(prediction, target)
    predicted_y, target_y = scored_luma(prediction, scale), scored_luma(target, scale)
    return psnr(predicted_y, target_y), ssim(predicted_y, target_y)


def _check_same_shape(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if prediction.shape != target.shape:
        raise ValueError(f"images differ in shape: {tuple(prediction.shape)} vs {tuple(target.shape)}")
