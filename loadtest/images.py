"""Request bodies: synthetic images of given sizes, or images from a folder, encoded once up front.

Encoding happens before any load is offered, so the generator spends its time sending, not
compressing. Synthetic images are smooth colour fields with some texture (sums of random sinusoids
plus mild noise), a fair stand-in for photos: they compress like photos and give the decoder
non-trivial content, unlike a flat image (too cheap to decode) or white noise (a huge PNG).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from loadtest.workload import ImageSet, SizeChoice, WorkloadError

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


@dataclass(frozen=True)
class ImagePayload:
    """One encoded input image, ready to send."""

    name: str
    height: int
    width: int
    body: bytes
    content_type: str

    @property
    def pixels(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class ImagePool:
    """Images grouped by size-mix entry: ``groups[i]`` holds the variants for ``weights[i]``."""

    groups: tuple[tuple[ImagePayload, ...], ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.groups or any(not group for group in self.groups) or len(self.groups) != len(self.weights):
            raise ValueError("an image pool needs at least one image per group and one weight per group")

    def probabilities(self) -> np.ndarray:
        weights = np.asarray(self.weights, dtype=np.float64)
        return weights / weights.sum()


def encode_png(rgb: np.ndarray) -> bytes:
    """(h, w, 3) uint8 → PNG bytes (fast compression: the server decodes whatever we send)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def synthetic_rgb(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth, textured (h, w, 3) uint8 image: random low-frequency sinusoids per channel plus mild noise."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float64)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float64)[None, :]
    image = np.empty((height, width, 3), dtype=np.float64)
    for channel in range(3):
        field = np.full((height, width), 0.5)
        for _ in range(4):
            fy, fx = rng.uniform(0.5, 6.0, size=2)
            phase = rng.uniform(0, 2 * np.pi)
            field += rng.uniform(0.05, 0.15) * np.sin(2 * np.pi * (fy * y + fx * x) + phase)
        image[:, :, channel] = field
    image += rng.normal(0.0, 0.03, size=image.shape)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def synthetic_pool(images: ImageSet, seed: int) -> ImagePool:
    """``images.variants`` synthetic PNGs for every size in the mix, deterministic in ``seed``."""
    groups = []
    for index, size in enumerate(images.sizes):
        variants = []
        for variant in range(images.variants):
            rng = np.random.default_rng([seed, index, variant])
            body = encode_png(synthetic_rgb(size.height, size.width, rng))
            name = f"synthetic-{size.height}x{size.width}-{variant}"
            variants.append(ImagePayload(name, size.height, size.width, body, "image/png"))
        groups.append(tuple(variants))
    return ImagePool(tuple(groups), tuple(size.weight for size in images.sizes))


def list_image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise WorkloadError(f"images.folder {folder} is not a directory")
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in CONTENT_TYPES and path.is_file())
    if not files:
        raise WorkloadError(f"images.folder {folder} has no {sorted(set(CONTENT_TYPES))} files")
    return files


def _centre_crop(path: Path, size: SizeChoice) -> np.ndarray | None:
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    if height < size.height or width < size.width:
        return None
    top, left = (height - size.height) // 2, (width - size.width) // 2
    return np.ascontiguousarray(rgb[top : top + size.height, left : left + size.width])


def folder_pool(images: ImageSet) -> ImagePool:
    """Images from ``images.folder``: as they are (no sizes given), or centre-cropped to each size in the mix.

    With sizes, each size takes up to ``images.variants`` files (in name order) large enough to crop.
    """
    assert images.folder is not None
    files = list_image_files(images.folder)
    if not images.sizes:
        payloads = []
        for path in files:
            with Image.open(path) as image:
                width, height = image.size
            payloads.append(
                ImagePayload(path.name, height, width, path.read_bytes(), CONTENT_TYPES[path.suffix.lower()])
            )
        return ImagePool(tuple((payload,) for payload in payloads), tuple(1.0 for _ in payloads))
    groups = []
    for size in images.sizes:
        variants = []
        for path in files:
            crop = _centre_crop(path, size)
            if crop is not None:
                name = f"{path.stem}-{size.height}x{size.width}"
                variants.append(ImagePayload(name, size.height, size.width, encode_png(crop), "image/png"))
            if len(variants) == images.variants:
                break
        if not variants:
            raise WorkloadError(f"no image in {images.folder} is at least {size.height}x{size.width} pixels")
        groups.append(tuple(variants))
    return ImagePool(tuple(groups), tuple(size.weight for size in images.sizes))


def build_pool(images: ImageSet, seed: int) -> ImagePool:
    return synthetic_pool(images, seed) if images.source == "synthetic" else folder_pool(images)
