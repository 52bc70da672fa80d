"""Training data: HR images in memory, random crops, MATLAB-bicubic LR, sampled LIIF queries.

Images are decoded once and kept as uint8 (the 291-image set is ~100 MB that way). Every batch has one
scale, so the whole batch runs at one width (Algorithm 1). All randomness comes from one
``torch.Generator`` whose state the trainer checkpoints, so a resumed run draws the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from models.coords import make_coord
from models.images import list_images, load_image
from models.resize import imresize_uint8


@dataclass
class TrainBatch:
    """One training batch at one scale: LR inputs and sampled HR queries."""

    lr: torch.Tensor  # (B, 3, p, p) float in [0, 1]
    coord: torch.Tensor  # (B, Q, 2) query centres in (-1, 1) over the HR crop
    cell: torch.Tensor  # (B, Q, 2) HR pixel size in the same units
    rgb: torch.Tensor  # (B, Q, 3) ground truth in [0, 1]
    scale: tuple[float, float]  # (s_h, s_w) of the batch
    #: (H, W) when the queries are the whole HR crop in row-major order (for ``grid`` decoders), else None.
    grid: tuple[int, int] | None = None


class PatchSampler:
    """Makes LIIF training batches from in-memory HR images.

    For a scale s the HR crop is round(p · s) pixels, augmented (flips, transpose), then downsampled to
    p × p exactly as MATLAB's ``imresize`` does a uint8 image (8-bit result, like the benchmark LR files
    and the LR a user uploads).
    """

    def __init__(self, images: list[torch.Tensor], patch: int = 48, queries: int = 2304) -> None:
        if not images:
            raise ValueError("PatchSampler needs at least one image")
        self.images = images
        self.patch = patch
        self.queries = queries

    @classmethod
    def from_folders(cls, folders: Iterable[str | Path], patch: int = 48, queries: int = 2304) -> PatchSampler:
        return cls([load_image(path) for path in list_images(folders)], patch, queries)

    def _crop(self, crop_h: int, crop_w: int, generator: torch.Generator) -> torch.Tensor:
        for _ in range(100):
            image = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            height, width = image.shape[1:]
            if height >= crop_h and width >= crop_w:
                top = int(torch.randint(height - crop_h + 1, (1,), generator=generator))
                left = int(torch.randint(width - crop_w + 1, (1,), generator=generator))
                return image[:, top : top + crop_h, left : left + crop_w]
        raise ValueError(f"no training image is at least {crop_h}x{crop_w}")

    def sample(
        self,
        batch_size: int,
        scale: tuple[float, float],
        generator: torch.Generator,
        device: torch.device | str | None = None,
        whole_grid: bool = False,
    ) -> TrainBatch:
        """A batch whose every item is upscaled by ``scale`` (s_h, s_w) from a ``patch`` × ``patch`` LR.

        The queries are ``queries`` HR pixels drawn at random (LIIF's way), or with ``whole_grid`` every
        HR pixel of the crop in row-major order (what a decoder that attends over the whole grid, like
        SRNO, trains on).

        Every random draw happens here on the CPU generator, item by item, so the batch sequence does not
        depend on ``device``. The uint8 crops are then stacked and sent to ``device`` once, where the whole
        batch is degraded in one batched resize: on a GPU host that keeps 2-core-class Python work (crop
        indices) as the only per-item cost, so one producer thread keeps the accelerator fed.
        """
        crop_h = round(self.patch * scale[0])
        crop_w = round(self.patch * scale[1])
        pixels = crop_h * crop_w
        count = pixels if whole_grid else min(self.queries, pixels)
        crops, chosen = [], []
        for _ in range(batch_size):
            crop = self._crop(crop_h, crop_w, generator)
            flips = torch.randint(2, (3,), generator=generator).tolist()
            if flips[0]:
                crop = crop.flip(-1)
            if flips[1]:
                crop = crop.flip(-2)
            if flips[2] and crop_h == crop_w:
                crop = crop.transpose(-1, -2)
            crops.append(crop)
            if whole_grid:
                chosen.append(torch.arange(pixels))
            else:
                chosen.append(torch.randperm(pixels, generator=generator)[:count])
        hr_uint8 = torch.stack(crops).to(device)  # (B, 3, H, W)
        index = torch.stack(chosen).to(device)  # (B, Q)
        lr = imresize_uint8(hr_uint8, (self.patch, self.patch)).float() / 255
        hr = hr_uint8.flatten(2).float() / 255  # (B, 3, H·W)
        rgb = torch.gather(hr, 2, index[:, None, :].expand(-1, 3, -1)).transpose(1, 2)
        coord = make_coord(crop_h, crop_w, device=hr.device)[index]
        cell = torch.tensor([2.0 / crop_h, 2.0 / crop_w], device=hr.device).expand(batch_size, count, 2)
        grid = (crop_h, crop_w) if whole_grid else None
        return TrainBatch(lr=lr, coord=coord, cell=cell, rgb=rgb.contiguous(), scale=scale, grid=grid)


def min_image_side(images: list[torch.Tensor]) -> int:
    """Smallest side over ``images``: caps the largest trainable scale (crop = patch · scale)."""
    return min(int(min(image.shape[1:])) for image in images)


def max_trainable_scale(images: list[torch.Tensor], patch: int) -> float:
    """Largest scale for which at least one image can supply a crop (informative, for config checks)."""
    return math.floor(max(int(min(image.shape[1:])) for image in images) / patch * 10) / 10
