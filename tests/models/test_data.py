"""models/data.py: image loading and the LIIF patch sampler (crops, augmentation, MATLAB LR, queries)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.coords import make_coord
from models.resize import imresize_uint8
from models.training.data import PatchSampler, TrainBatch, list_images, load_image, max_trainable_scale, min_image_side


def synthetic_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A (3, H, W) uint8 photo-like image whose every small window is unique (smooth + noise)."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    smooth = 120 + 50 * torch.sin(xs / 5 + seed) * torch.cos(ys / 7)
    noisy = smooth + 40 * torch.rand(3, height, width, generator=generator)
    return noisy.round().clamp(0, 255).to(torch.uint8)


def save_png(path: Path, image: torch.Tensor) -> Path:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return path


def full_hr(batch: TrainBatch, item: int, size: tuple[int, int]) -> torch.Tensor:
    """Rebuild the whole HR crop (3, H, W) uint8 of one item whose queries cover every pixel."""
    height, width = size
    coord = batch.coord[item]
    rows = torch.round((coord[:, 0] + 1) * height / 2 - 0.5).long()
    cols = torch.round((coord[:, 1] + 1) * width / 2 - 0.5).long()
    image = torch.zeros(3, height, width, dtype=torch.float32)
    image[:, rows, cols] = batch.rgb[item].T
    return torch.round(image * 255).to(torch.uint8)


def contains_transformed(image: torch.Tensor, crop: torch.Tensor) -> bool:
    """Whether some flip/transpose of ``crop`` is a window of ``image`` (the sampler's augmentations)."""
    candidates = [crop, crop.flip(-1), crop.flip(-2), crop.flip(-1).flip(-2)]
    candidates += [candidate.transpose(-1, -2) for candidate in candidates]
    for candidate in candidates:
        height, width = candidate.shape[-2:]
        windows = image.unfold(1, height, 1).unfold(2, width, 1)  # (3, nh, nw, h, w)
        if (windows == candidate[:, None, None]).all(dim=(0, 3, 4)).any():
            return True
    return False


def test_load_image_gives_rgb_uint8(tmp_path: Path) -> None:
    image = synthetic_image(9, 11, seed=0)
    loaded = load_image(save_png(tmp_path / "rgb.png", image))
    assert loaded.dtype == torch.uint8 and torch.equal(loaded, image)
    gray = image[0].numpy()
    Image.fromarray(gray).save(tmp_path / "gray.png")
    loaded = load_image(tmp_path / "gray.png")
    assert loaded.shape == (3, 9, 11)
    assert torch.equal(loaded[0], torch.from_numpy(gray)) and torch.equal(loaded[0], loaded[2])
    Image.fromarray(np.dstack([image.permute(1, 2, 0).numpy(), np.full((9, 11), 7, np.uint8)])).save(
        tmp_path / "rgba.png"
    )
    assert torch.equal(load_image(tmp_path / "rgba.png"), image)


def test_list_images_is_sorted_filtered_and_strict(tmp_path: Path) -> None:
    for name in ("b.png", "a.PNG", "c.bmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in list_images([tmp_path])] == ["a.PNG", "b.png", "c.bmp"]
    with pytest.raises(FileNotFoundError, match="not found"):
        list_images([tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images([empty])


def test_batch_shapes_ranges_and_cells() -> None:
    sampler = PatchSampler([synthetic_image(60, 70, seed=1)], patch=8, queries=50)
    batch = sampler.sample(3, (2.5, 2.5), torch.Generator().manual_seed(0))
    assert batch.lr.shape == (3, 3, 8, 8) and batch.lr.dtype == torch.float32
    assert batch.coord.shape == (3, 50, 2) and batch.cell.shape == (3, 50, 2) and batch.rgb.shape == (3, 50, 3)
    assert batch.scale == (2.5, 2.5)
    assert 0 <= float(batch.lr.min()) and float(batch.lr.max()) <= 1
    assert float(batch.coord.abs().max()) < 1
    torch.testing.assert_close(batch.cell, torch.full((3, 50, 2), 2 / 20))  # HR crop round(8 · 2.5) = 20
    # LR values are 8-bit levels, as a stored LR image would be.
    torch.testing.assert_close(batch.lr * 255, (batch.lr * 255).round(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("scale", [(2.0, 2.0), (1.5, 3.25)])
def test_lr_is_matlab_bicubic_of_an_augmented_hr_crop(scale: tuple[float, float]) -> None:
    image = synthetic_image(40, 44, seed=2)
    sampler = PatchSampler([image], patch=8, queries=10_000)  # more queries than pixels: every pixel
    crop_size = (round(8 * scale[0]), round(8 * scale[1]))
    batch = sampler.sample(4, scale, torch.Generator().manual_seed(5))
    assert batch.coord.shape[1] == crop_size[0] * crop_size[1]
    for item in range(4):
        hr = full_hr(batch, item, crop_size)
        assert contains_transformed(image, hr)
        expected = imresize_uint8(hr, (8, 8)).float() / 255
        assert torch.equal(batch.lr[item], expected)
        # Every query's target is the HR pixel under it.
        grid = make_coord(*crop_size)
        matches = (batch.coord[item][:, None, :] == grid[None]).all(-1)
        assert bool(matches.any(1).all())


def test_non_square_scales_are_never_transposed() -> None:
    image = synthetic_image(50, 50, seed=3)
    sampler = PatchSampler([image], patch=6, queries=10_000)
    batch = sampler.sample(8, (1.5, 3.0), torch.Generator().manual_seed(1))
    for item in range(8):
        hr = full_hr(batch, item, (9, 18))
        flips = [hr, hr.flip(-1), hr.flip(-2), hr.flip(-1).flip(-2)]
        assert any(contains_transformed(image, candidate) for candidate in flips)


def test_sampling_is_reproducible_from_the_generator() -> None:
    images = [synthetic_image(40, 50, seed=4), synthetic_image(45, 35, seed=5)]
    sampler = PatchSampler(images, patch=8, queries=30)
    first = sampler.sample(2, (3.1, 3.1), torch.Generator().manual_seed(7))
    again = sampler.sample(2, (3.1, 3.1), torch.Generator().manual_seed(7))
    other = sampler.sample(2, (3.1, 3.1), torch.Generator().manual_seed(8))
    for name in ("lr", "coord", "cell", "rgb"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.lr, other.lr)


def test_generator_state_after_a_batch_resumes_the_sequence() -> None:
    """The trainer checkpoints the generator state after each batch; restoring it gives the next batch."""
    sampler = PatchSampler([synthetic_image(40, 40, seed=6)], patch=8, queries=20)
    generator = torch.Generator().manual_seed(3)
    sampler.sample(2, (2.0, 2.0), generator)
    state = generator.get_state()
    expected = sampler.sample(2, (1.7, 1.7), generator)
    resumed = sampler.sample(2, (1.7, 1.7), torch.Generator().set_state(state))
    assert torch.equal(expected.lr, resumed.lr) and torch.equal(expected.rgb, resumed.rgb)


def test_crops_skip_images_that_are_too_small_and_fail_when_none_fit() -> None:
    small, large = synthetic_image(10, 10, seed=7), synthetic_image(40, 40, seed=8)
    sampler = PatchSampler([small, large], patch=8, queries=10_000)
    batch = sampler.sample(3, (4.0, 4.0), torch.Generator().manual_seed(0))  # 32x32 crops: only `large` fits
    for item in range(3):
        assert contains_transformed(large, full_hr(batch, item, (32, 32)))
    with pytest.raises(ValueError, match="at least 48x48"):
        sampler.sample(1, (6.0, 6.0), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="at least one image"):
        PatchSampler([], patch=8)


def test_from_folders_and_size_helpers(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", synthetic_image(30, 50, seed=9))
    save_png(tmp_path / "b.png", synthetic_image(64, 40, seed=10))
    sampler = PatchSampler.from_folders([tmp_path], patch=8, queries=16)
    assert len(sampler.images) == 2 and sampler.patch == 8 and sampler.queries == 16
    assert min_image_side(sampler.images) == 30
    assert max_trainable_scale(sampler.images, patch=8) == 5.0  # largest min side 40 / 8
