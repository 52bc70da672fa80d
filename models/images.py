"""Image files as uint8 tensors: how training, evaluation and the CLI read HR and LR images."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def load_image(path: Path) -> torch.Tensor:
    """Decode an image file to a (3, H, W) uint8 tensor; grayscale is repeated to three channels."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def list_images(folders: Iterable[str | Path]) -> list[Path]:
    """All image files directly inside ``folders``, sorted for reproducibility."""
    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {folder}")
        paths.extend(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
    if not paths:
        raise FileNotFoundError(f"no images in {[str(f) for f in folders]}")
    return paths
