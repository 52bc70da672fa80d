"""models/metrics.py: Y conversion, border shave, PSNR and SSIM against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from models.evaluation.metrics import (
    SSIM_K1,
    SSIM_K2,
    gaussian_window,
    psnr,
    psnr_ssim_y,
    rgb_to_y,
    scored_luma,
    shave,
    shave_for_scale,
    ssim,
)


def solid(r: float, g: float, b: float, size: tuple[int, int] = (2, 3)) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=torch.float64)[:, None, None].expand(3, *size)


def test_y_of_pure_colours_matches_matlab_rgb2ycbcr() -> None:
    # MATLAB: rgb2ycbcr(uint8([0 0 0; 255 255 255; 255 0 0; 0 255 0; 0 0 255])) gives Y = 16, 235, 81.481,
    # 144.553, 40.966 before rounding.
    cases = {(0, 0, 0): 16.0, (1, 1, 1): 235.0, (1, 0, 0): 81.481, (0, 1, 0): 144.553, (0, 0, 1): 40.966}
    for rgb, y in cases.items():
        torch.testing.assert_close(rgb_to_y(solid(*rgb)), torch.full((2, 3), y / 255, dtype=torch.float64))
    batch = torch.stack([solid(0, 0, 0), solid(1, 1, 1)])
    assert rgb_to_y(batch).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="RGB"):
        rgb_to_y(torch.zeros(4, 5, 5))


@pytest.mark.parametrize(
    ("scale", "border"),
    [((2.0, 2.0), (2, 2)), ((3.0, 3.0), (3, 3)), ((4.0, 4.0), (4, 4)), ((1.1, 1.1), (2, 2)), ((2.5, 3.7), (3, 4))],
)
def test_shave_is_ceil_of_scale_per_axis(scale: tuple[float, float], border: tuple[int, int]) -> None:
    assert shave_for_scale(scale) == border


def test_shave_tolerates_float_noise_of_scale_grids() -> None:
    assert shave_for_scale((0.1 * 30, 0.1 * 30)) == (3, 3)  # 3.0000000000000004


def test_shave_removes_the_border_and_checks_sizes() -> None:
    image = torch.arange(7 * 9).reshape(7, 9)
    assert torch.equal(shave(image, (2, 3)), image[2:5, 3:6])
    with pytest.raises(ValueError, match="nothing left"):
        shave(image, (4, 0))


def test_psnr_of_a_known_error() -> None:
    target = torch.full((10, 10), 0.5, dtype=torch.float64)
    assert psnr(target + 0.1, target) == pytest.approx(20.0)  # MSE 0.01
    assert psnr(target + 0.01, target) == pytest.approx(40.0)
    off = target.clone()
    off[0, :5] += 0.2  # MSE = 5 · 0.04 / 100 = 0.002
    assert psnr(off, target) == pytest.approx(10 * math.log10(1 / 0.002))
    assert psnr(target, target) == math.inf
    assert psnr(target * 255 + 2.55, target * 255, peak=255) == pytest.approx(40.0)


def test_psnr_y_counts_only_luma_inside_the_shaved_border() -> None:
    target = torch.full((3, 20, 24), 0.5, dtype=torch.float64)
    prediction = target.clone()
    prediction[:, 3:-3, 3:-3] += 0.1  # every channel up by 0.1: Y up by 0.1 · 219 / 255
    prediction[:, :3] = 0.0  # garbage only in the shaved border (scale 2.5 shaves 3 pixels)
    prediction[:, :, -3:] = 1.0
    value, _ = psnr_ssim_y(prediction, target, (2.5, 2.5))
    assert value == pytest.approx(20 * math.log10(255 / (0.1 * 219)))
    # Chroma-only change (Y weights sum to zero for this direction) does not move PSNR on Y.
    chroma = target.clone()
    chroma[0] += 0.01 * 128.553
    chroma[1] -= 0.01 * 65.481
    assert psnr_ssim_y(chroma, target, (2.0, 2.0))[0] == math.inf


def test_ssim_of_identical_images_is_one() -> None:
    image = torch.rand(24, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_two_constants_is_the_luminance_term() -> None:
    a, b = 0.3, 0.6
    c1 = (SSIM_K1 * 1.0) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: the structure term is C2 / C2
    x = torch.full((15, 17), a, dtype=torch.float64)
    y = torch.full((15, 17), b, dtype=torch.float64)
    assert ssim(x, y) == pytest.approx(expected, rel=1e-12)
    assert ssim(x * 255, y * 255, data_range=255) == pytest.approx(expected, rel=1e-12)


def test_ssim_of_a_checkerboard_against_a_constant_matches_the_closed_form() -> None:
    """x = m + a·(-1)^(i+j), y = constant. Under a normalised separable window g, each window sees
    mean m ± a·s² (s = Σ (-1)^k g_k, sign alternating with the window's position) and variance a²(1 - s⁴);
    y has no variance and no covariance with x, so SSIM = luminance · C2 / (σx² + C2) per window."""
    m, a, c = 0.5, 0.2, 0.45
    size = (12, 13)  # 2 x 3 valid windows: 3 of each sign
    i, j = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    x = m + a * (1 - 2 * ((i + j) % 2)).to(torch.float64)
    y = torch.full(size, c, dtype=torch.float64)
    line = gaussian_window()
    s = float((line * (1 - 2 * (torch.arange(11) % 2))).sum())
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    variance = a * a * (1 - s**4)
    values = []
    for sign in (1, -1):
        mu = m + sign * a * s * s
        values.append((2 * mu * c + c1) / (mu * mu + c * c + c1) * c2 / (variance + c2))
    assert ssim(x, y) == pytest.approx(sum(values) / 2, rel=1e-10)
    assert ssim(y, x) == pytest.approx(ssim(x, y), rel=1e-12)  # symmetric


def test_ssim_window_is_matlab_fspecial_gaussian() -> None:
    """fspecial('gaussian', 11, 1.5): exp(-(u² + v²) / (2 · 1.5²)) over offsets -5..5, normalised in 2-D."""
    line = gaussian_window()
    window = line[:, None] * line[None, :]
    raw = [[math.exp(-(u * u + v * v) / 4.5) for v in range(-5, 6)] for u in range(-5, 6)]
    total = sum(map(sum, raw))
    expected = torch.tensor([[value / total for value in row] for row in raw], dtype=torch.float64)
    torch.testing.assert_close(window, expected, rtol=1e-12, atol=0)
    assert float(window[5, 5]) == pytest.approx(0.0707, abs=1e-4)


def test_ssim_drops_with_noise_and_rejects_bad_input() -> None:
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(32, 32, dtype=torch.float64, generator=generator)
    slightly = image + 0.02 * torch.randn(32, 32, dtype=torch.float64, generator=generator)
    badly = image + 0.2 * torch.randn(32, 32, dtype=torch.float64, generator=generator)
    assert 1.0 > ssim(slightly, image) > ssim(badly, image) > 0.0
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(10, 40), torch.zeros(10, 40))
    with pytest.raises(ValueError, match="single-channel"):
        ssim(torch.zeros(3, 20, 20), torch.zeros(3, 20, 20))
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(torch.zeros(20, 20), torch.zeros(20, 21))


def test_scored_luma_is_y_then_shave() -> None:
    image = torch.rand(3, 20, 22, dtype=torch.float64)
    torch.testing.assert_close(scored_luma(image, (3.0, 2.0)), rgb_to_y(image)[3:-3, 2:-2])
