"""Image files for ``anysr upscale``: read anything Pillow decodes as RGB (+ alpha), write by file extension.

The model sees RGB only. Grey images are fed as three equal channels and written back grey; an alpha
channel is set aside, upscaled bicubically by the caller and re-attached when the output format can
store it (otherwise dropped, with a note). Every conversion that loses or invents information adds a
note, so the command can say what it did. Unlike ``server/codec.py`` (an HTTP allow-list of PNG, JPEG
and WebP with status-coded errors) this reads and writes any format Pillow supports, from local files.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from cli.common import CliError

#: Grey modes, with the value that maps to white.
_GREY_FULL_SCALE = {"1": 1, "L": 255, "I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535}

#: Encoder settings for lossy formats: SR output is detail, so high quality and no chroma subsampling.
_SAVE_OPTIONS: dict[str, dict[str, object]] = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"quality": 95}}


@dataclass(frozen=True)
class InputImage:
    """A decoded input: ``rgb`` (h, w, 3) float32 in [0, 1]; ``alpha`` (h, w) uint8 or None."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    grey: bool
    mode: str
    notes: tuple[str, ...] = field(default=())

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) in pixels."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def read_image(path: Path) -> InputImage:
    """Decode ``path`` (first frame, EXIF orientation applied); raises :class:`CliError` if it cannot."""
    try:
        with Image.open(path) as opened:
            opened.load()
            return _decode(opened)
    except FileNotFoundError:
        raise CliError(f"input image not found: {path}") from None
    except UnidentifiedImageError:
        raise CliError(f"cannot decode {path}: not an image format Pillow recognises") from None
    except Image.DecompressionBombError as error:
        raise CliError(f"refusing {path}: {error}") from None
    except OSError as error:
        raise CliError(f"cannot read {path}: {error}") from None


def _decode(image: Image.Image) -> InputImage:
    """The first frame of an opened image, EXIF orientation applied, as arrays (see :func:`_to_arrays`)."""
    notes = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(f"input has {frames} frames; only the first is upscaled")
    mode = image.mode
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
        notes.append("applied the EXIF orientation")
    rgb, alpha, grey = _to_arrays(image, notes)
    return InputImage(rgb=rgb, alpha=alpha, grey=grey, mode=mode, notes=tuple(notes))


def output_format(path: Path) -> str:
    """Pillow's format name for ``path``'s extension, if Pillow can write it; else :class:`CliError`."""
    extension = path.suffix.lower()
    fmt = Image.registered_extensions().get(extension)
    if fmt is None or fmt not in Image.SAVE:
        raise CliError(
            f"cannot tell an output format Pillow can write from the extension {extension or '(none)'!r} of {path}; "
            "use e.g. .png, .jpg, .webp, .tif or .bmp"
        )
    return fmt


def upscale_alpha(alpha: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an (h, w) uint8 alpha plane to ``out_size`` (H, W)."""
    plane = Image.fromarray(alpha).resize((out_size[1], out_size[0]), Image.Resampling.BICUBIC)
    return np.asarray(plane)


def write_image(
    path: Path, rgb: np.ndarray, alpha: np.ndarray | None, grey: bool, text: dict[str, str] | None = None
) -> list[str]:
    """Write (H, W, 3) uint8 ``rgb`` (+ optional alpha) to ``path`` in the format its extension names.

    Grey inputs are written grey (luma of the output). ``text`` goes into PNG text chunks (provenance:
    weights, width, scale). The file appears atomically (written beside it, then renamed). Returns notes.
    """
    fmt = output_format(path)
    notes = []
    image = Image.fromarray(rgb)
    if grey:
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha))
    options = dict(_SAVE_OPTIONS.get(fmt, {}))
    if fmt == "PNG" and text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        options["pnginfo"] = info
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            image.save(temporary, format=fmt, **options)
        except (OSError, ValueError) as error:
            if alpha is None:
                raise
            # The format cannot hold this mode with alpha (e.g. JPEG): keep the colour, drop the alpha.
            image = image.convert("L" if grey else "RGB")
            image.save(temporary, format=fmt, **options)
            notes.append(f"{fmt} cannot store the alpha channel ({error}); alpha dropped")
        os.replace(temporary, path)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot write {path}: {error}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return notes


def _to_arrays(image: Image.Image, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(rgb float32 (h, w, 3) in [0, 1], alpha uint8 or None, grey?) for any Pillow mode."""
    mode = image.mode
    if mode in ("La", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        image = image.convert("LA" if mode == "La" else "RGBA")
        mode = image.mode
    alpha = None
    if mode in ("LA", "RGBA"):
        alpha = np.asarray(image.getchannel("A"))
        image = image.convert("L" if mode == "LA" else "RGB")
        mode = image.mode
    if mode in _GREY_FULL_SCALE or mode in ("I", "F"):
        grey = _grey_array(image, notes)
        return np.repeat(grey[:, :, None], 3, axis=2), alpha, True
    if mode != "RGB":
        notes.append(f"converted {mode} to RGB")
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float32) / 255.0, alpha, False


def _grey_array(image: Image.Image, notes: list[str]) -> np.ndarray:
    """A grey image as (h, w) float32 in [0, 1], whatever its bit depth."""
    values = np.asarray(image, dtype=np.float32)
    full_scale = _GREY_FULL_SCALE.get(image.mode)
    if full_scale is None:
        # "I" (32-bit int) and "F" (float): Pillow stores 16-bit PNGs as "I"; guess the range from the data.
        peak = float(values.max()) if values.size else 0.0
        full_scale = 1 if image.mode == "F" and peak <= 1.0 else 255 if peak <= 255 else 65535
    if full_scale > 255:
        notes.append(f"{image.mode} input has more than 8 bits; the output is 8-bit")
    return np.clip(values / full_scale, 0.0, 1.0)
