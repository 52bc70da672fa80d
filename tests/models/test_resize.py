"""models/resize.py: MATLAB ``imresize`` bicubic, checked against hand-worked values and its invariants.

Reference values are worked out by hand from MATLAB's ``imresize.m`` algorithm (``contributions``: Keys cubic
a = -0.5, kernel widened by 1/scale when shrinking, input position u = x/s + (1 - 1/s)/2, mirrored border,
rows normalised to sum 1). They are dyadic fractions, so the comparisons are exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.resize import cubic, imresize, imresize_uint8, resize_matrices

RAMP = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)


def test_cubic_kernel_is_keys_a_minus_half() -> None:
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5], dtype=torch.float64)
    expected = [1.0, 0.8671875, 0.5625, 0.2265625, 0.0, -0.0703125, -0.0625, -0.0234375, 0.0, 0.0]
    assert cubic(x).tolist() == expected
    assert torch.equal(cubic(-x), cubic(x))


def test_halving_a_row_matches_hand_computation() -> None:
    # Output 1 sits at input 1.5; taps at distances ±0.5, ±1.5, ±2.5, ±3.5 weigh 0.5·cubic(d/2):
    # 0.8671875, 0.2265625, -0.0703125, -0.0234375 (per side, then normalised by their sum 2). Mirroring
    # maps inputs 0, -1, -2 to 1, 2, 3 and 5 to 4: (1·1.09375 + 2·0.796875 + 3·0.203125 + 4·(-0.09375)) / 2.
    out = imresize(RAMP, scale=0.5)
    assert out.shape == (1, 2)
    assert out[0].tolist() == [1.4609375, 3.5390625]
    # The same along a column: the scale applies to both axes, and a 1-pixel axis stays put.
    assert imresize(RAMP.T, scale=0.5)[:, 0].tolist() == [1.4609375, 3.5390625]


def test_doubling_a_row_matches_hand_computation() -> None:
    # imresize([1 2 3 4], 2) is 2x8 (a 1-pixel axis also doubles: ceil(1·2) rows). Output 1 sits at u = 0.75:
    # taps at inputs 0, 1, 2 (0 mirrors to 1) weigh cubic(1.75), cubic(0.75) + cubic(0.25), cubic(1.25), etc.
    out = imresize(RAMP, scale=2.0)
    expected = [0.90625, 1.1796875, 1.7265625, 2.25, 2.75, 3.2734375, 3.8203125, 4.09375]
    assert out.shape == (2, 8)
    assert out[0].tolist() == expected
    assert out[1].tolist() == expected


def test_output_size_argument_sets_per_axis_scale() -> None:
    image = torch.rand(1, 9, 12, dtype=torch.float64)
    by_size = imresize(image, out_size=(3, 4))
    by_scale = imresize(image, scale=1 / 3)
    torch.testing.assert_close(by_size, by_scale, rtol=0, atol=1e-12)
    assert imresize(image, scale=0.5).shape[-2:] == (5, 6)  # ceil, as MATLAB


@pytest.mark.parametrize("out_size", [(4, 4), (7, 5), (16, 9), (31, 40), (13, 13)])
def test_constant_image_stays_constant(out_size: tuple[int, int]) -> None:
    image = torch.full((3, 13, 13), 0.3, dtype=torch.float64)
    torch.testing.assert_close(imresize(image, out_size=out_size), torch.full((3, *out_size), 0.3, dtype=torch.float64))
    levels = torch.full((3, 13, 13), 200, dtype=torch.uint8)
    assert torch.equal(imresize_uint8(levels, out_size), torch.full((3, *out_size), 200, dtype=torch.uint8))


@pytest.mark.parametrize("out_size", [(5, 5), (6, 11), (24, 30)])
def test_flips_and_transpose_commute_with_resizing(out_size: tuple[int, int]) -> None:
    image = torch.rand(3, 12, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    resized = imresize(image, out_size=out_size)
    for dims in ((-1,), (-2,), (-1, -2)):
        torch.testing.assert_close(imresize(image.flip(dims), out_size=out_size), resized.flip(dims))
    transposed = imresize(image.transpose(-1, -2), out_size=out_size[::-1])
    torch.testing.assert_close(transposed, resized.transpose(-1, -2))


def test_weight_rows_sum_to_one_and_are_separable() -> None:
    rows, cols = resize_matrices((10, 17), (4, 29))
    torch.testing.assert_close(rows.sum(dim=1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(cols.sum(dim=1), torch.ones(29, dtype=torch.float64))
    image = torch.rand(10, 17, dtype=torch.float64)
    torch.testing.assert_close(imresize(image, out_size=(4, 29)), rows @ image @ cols.T)


def test_uint8_rounds_after_each_axis_like_matlab() -> None:
    """MATLAB's per-axis kernel returns uint8, so the first pass is rounded before the second."""
    image = torch.randint(0, 256, (3, 24, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    rows, cols = resize_matrices((24, 30), (8, 10))
    first = torch.floor(rows @ image.double() + 0.5).clamp(0, 255)  # rows first on a tie of scales
    expected = torch.floor(first @ cols.T + 0.5).clamp(0, 255).to(torch.uint8)
    out = imresize_uint8(image, (8, 10))
    assert torch.equal(out, expected)
    # ...which is not the same as rounding once at the end (that is what made the fix necessary).
    once = imresize(image.double(), out_size=(8, 10)).round().clamp(0, 255).to(torch.uint8)
    assert not torch.equal(out, once)
    assert (out.int() - once.int()).abs().max() <= 1


def test_uint8_resizes_the_more_shrunk_axis_first() -> None:
    image = torch.randint(0, 256, (1, 20, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    rows, cols = resize_matrices((20, 12), (5, 9))  # rows scale 0.25 < columns 0.75: rows first
    first = torch.floor(rows @ image.double() + 0.5).clamp(0, 255)
    expected = torch.floor(first @ cols.T + 0.5).clamp(0, 255).to(torch.uint8)
    assert torch.equal(imresize_uint8(image, (5, 9)), expected)
    rows, cols = resize_matrices((12, 20), (9, 5))  # columns shrink more: columns first
    transposed = image.transpose(-1, -2).contiguous()
    first = torch.floor(transposed.double() @ cols.T + 0.5).clamp(0, 255)
    expected = torch.floor(rows @ first + 0.5).clamp(0, 255).to(torch.uint8)
    assert torch.equal(imresize_uint8(transposed, (9, 5)), expected)


def test_uint8_rejects_float_input_and_bad_sizes() -> None:
    with pytest.raises(TypeError, match="uint8"):
        imresize_uint8(torch.rand(3, 8, 8), (4, 4))
    with pytest.raises(ValueError, match="out_size"):
        imresize_uint8(torch.zeros(3, 8, 8, dtype=torch.uint8), (0, 4))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="positive"):
        imresize(torch.rand(3, 8, 8), scale=-1.0)


def test_pil_bicubic_differs_measurably() -> None:
    """PIL's BICUBIC is not MATLAB's (border handling, pass order, fixed point): LR images differ."""
    generator = torch.Generator().manual_seed(4)
    # A smooth image plus texture, like a photo: differences are not just noise on noise.
    ys, xs = torch.meshgrid(torch.arange(96.0), torch.arange(120.0), indexing="ij")
    smooth = 128 + 60 * torch.sin(xs / 9) * torch.cos(ys / 13)
    image = (smooth + 25 * torch.rand(3, 96, 120, generator=generator)).round().clamp(0, 255).to(torch.uint8)
    ours = imresize_uint8(image, (24, 30)).int()
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((30, 24), Image.Resampling.BICUBIC)
    theirs = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).int()
    difference = (ours - theirs).abs().float()
    assert difference.max() >= 2
    assert difference.mean() > 0.05
    # Concentrated where PIL truncates the kernel instead of mirroring: the outermost rows and columns.
    border = torch.ones_like(difference, dtype=torch.bool)
    border[:, 1:-1, 1:-1] = False
    assert difference[border].mean() > 2 * difference[~border].mean()
