"""Shared test factories for the server tests: images, apps built on a tiny model, a test client.

Starlette's TestClient warns (StarletteDeprecationWarning) when only ``httpx`` is installed rather
than ``httpx2``; the warning is about the client library, not our code, so it is silenced for this
one import only (the project's warnings-as-errors setting stays in force everywhere else).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image

from models import TINY_SPEC, AnySR, build_model
from server.app import create_app
from server.settings import Settings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*install `httpx2` instead", category=UserWarning)
    from fastapi.testclient import TestClient

__all__ = ["TestClient", "encode", "make_app", "random_image", "fast_settings", "TINY_META"]


def _meta_model() -> AnySR:
    with torch.device("meta"):
        return build_model(TINY_SPEC)


#: The tiny model on the meta device: what FLOPs, halos and plans are computed from (no weights needed).
TINY_META = _meta_model()


def random_image(height: int, width: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A deterministic noise image of ``mode`` (RGB, RGBA, L or P)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode, 1)
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    if channels == 1:
        image = Image.fromarray(pixels[:, :, 0])
        return image if mode == "L" else image.convert("P")
    return Image.fromarray(pixels)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def fast_settings(**overrides) -> Settings:
    """Settings for a fast app: tiny warm-up, tiles small enough that modest images get tiled."""
    # fp32 explicitly: "auto" would time a bf16 probe at start-up and could pick either on a bf16 CPU.
    values = {
        "warmup_size": 8,
        "tile_size": 16,
        "load_sample_interval_s": 0.05,
        "max_batch_wait_ms": 1.0,
        "precision": "fp32",
    }
    values.update(overrides)
    return Settings(**values)


def make_app(settings: Settings | None = None, model=None, **kwargs):
    """An app on a tiny randomly initialised model (seeded), no weights file needed."""
    if model is None and "runner" not in kwargs:
        torch.manual_seed(0)
        model = build_model(TINY_SPEC)
    return create_app(settings or fast_settings(), model=model, **kwargs)
