"""Image bytes ⇄ tensors: decode with limits, validate, encode. No HTTP, no model.

Decoding checks the format against the allow-list and the pixel count against the limit *before*
decompressing (Pillow reads the size from the header), so an oversized or hostile image costs a
header parse, not its pixels. EXIF orientation is applied; palette and grey images become RGB; an
alpha channel is kept aside and upscaled with bicubic resampling, then re-attached where the output
format supports it (PNG, WebP). The model sees RGB only.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from server.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType

#: Format names as the API spells them → Pillow's format names, and their media types.
PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
FORMAT_BY_MEDIA_TYPE = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/webp": "webp"}
_FORMAT_BY_PILLOW = {pillow: name for name, pillow in PILLOW_FORMATS.items()}


@dataclass(frozen=True)
class DecodeLimits:
    """What an input image may be."""

    formats: tuple[str, ...] = ("png", "jpeg", "webp")
    max_input_pixels: int = 2048 * 2048


@dataclass(frozen=True)
class DecodedImage:
    """A decoded input: RGB in [0, 1] as (3, h, w) float32, optional alpha (h, w) uint8, source format."""

    rgb: torch.Tensor
    alpha: np.ndarray | None
    format: str

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) in pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])


def decode_image(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """Decode ``data`` or raise 400 (not an image), 415 (format not allowed) or 413 (too many pixels)."""
    if not data:
        raise BadRequest("empty_body", "request body is empty; send the image bytes or a multipart field 'image'")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and later errors) on decompression bombs; treat its warning as the 413 it is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise PayloadTooLarge("input_too_large", f"image has too many pixels: {error}") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise BadRequest("invalid_image", f"body is not a decodable image: {error}") from None
    name = _FORMAT_BY_PILLOW.get(image.format or "")
    if name is None or name not in limits.formats:
        raise UnsupportedMediaType(
            "unsupported_format",
            f"image format {image.format!r} is not accepted; allowed: {', '.join(limits.formats)}",
        )
    width, height = image.size
    if width * height > limits.max_input_pixels:
        raise PayloadTooLarge(
            "input_too_large",
            f"input has {width}x{height} = {width * height} pixels; at most {limits.max_input_pixels} are allowed",
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise BadRequest("invalid_image", f"image data is corrupt: {error}") from None
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha_plane = np.asarray(rgba.getchannel("A"))
        if alpha_plane.min() < 255:
            alpha = alpha_plane
        image = rgba.convert("RGB")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    rgb = pixels.permute(2, 0, 1).float().div_(255.0)
    return DecodedImage(rgb=rgb, alpha=alpha, format=name)


@dataclass(frozen=True)
class EncodeOptions:
    """Output format and its settings."""

    format: str = "png"
    #: JPEG/WebP quality 1-100 (ignored for PNG).
    quality: int = 90
    #: zlib level 0-9 for PNG; low levels encode several times faster for slightly larger files.
    png_compress_level: int = 1


def check_output_options(fmt: str, quality: int | None, allowed: tuple[str, ...], default_quality: int) -> None:
    """422 unless ``fmt`` is an allowed output format and ``quality`` (if given) is in 1..100."""
    if fmt not in allowed:
        raise Unprocessable("unsupported_output_format", f"format must be one of {', '.join(allowed)}, got {fmt!r}")
    if quality is not None and not 1 <= quality <= 100:
        raise Unprocessable("invalid_quality", f"quality must be between 1 and 100, got {quality}")
    if not 1 <= default_quality <= 100:
        raise ValueError(f"default quality must be between 1 and 100, got {default_quality}")


def encode_image(pixels: torch.Tensor, alpha: np.ndarray | None, options: EncodeOptions) -> bytes:
    """Encode (H, W, 3) uint8 ``pixels`` (plus the input's alpha, resized to fit) as ``options.format``."""
    image = Image.fromarray(pixels.numpy())
    if alpha is not None and options.format in ("png", "webp"):
        plane = Image.fromarray(alpha).resize(image.size, Image.Resampling.BICUBIC)
        image.putalpha(plane)
    buffer = io.BytesIO()
    pillow_format = PILLOW_FORMATS[options.format]
    if options.format == "png":
        image.save(buffer, pillow_format, compress_level=options.png_compress_level)
    else:
        image.save(buffer, pillow_format, quality=options.quality)
    return buffer.getvalue()
