"""16-bit PNG: read every bit of a 16-bit PNG with Pillow, and write 16-bit RGB(A) PNGs, which Pillow cannot.

Pillow keeps 16-bit greyscale (mode ``I;16``) but reduces 16-bit RGB, RGBA and grey+alpha to 8 bits on
load. Its PNG decoder does the inflating and unfiltering for every depth, though, and only the last
step (the unpacker) drops the low bytes; :func:`read_16bit_png` runs the decoder a second time with
an unpacker that keeps the *low* bytes instead (``RGB;16L`` reads the second byte of each big-endian
sample), or, for grey+alpha, one that keeps all four bytes of a pixel, and joins the halves.

:func:`write_png` writes RGB or RGBA at 16 bits per sample (filter type Sub on every row, zlib at the
given level), with an optional ICC profile (``iCCP``) and EXIF block (``eXIf``). No HTTP, no torch.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The colour types a 16-bit PNG can have and how to read all of its bits: (mode Pillow opens it as,
#: the raw mode Pillow unpacks it with) → the raw mode that yields the low bytes (None: decode whole pixels).
_LOW_BYTES = {("RGB", "RGB;16B"): "RGB;16L", ("RGBA", "RGBA;16B"): "RGBA;16L", ("RGBA", "LA;16B"): None}


def is_16bit_png(image: Image.Image) -> bool:
    """Whether ``image`` (opened, not loaded) is a PNG with 16 bits per sample."""
    if image.format != "PNG" or len(image.tile) != 1:
        return False
    return image.mode in ("I;16", "I;16B") or (image.mode, image.tile[0].args) in _LOW_BYTES


def read_16bit_png(data: bytes, image: Image.Image) -> np.ndarray:
    """All bits of an opened 16-bit PNG as (h, w, C) uint16, C = 1 (grey), 2 (grey+alpha), 3 or 4."""
    if image.mode in ("I;16", "I;16B"):
        image.load()
        return np.asarray(image).astype(np.uint16)[:, :, None]
    tile = image.tile[0]
    low_mode = _LOW_BYTES[(image.mode, tile.args)]
    if low_mode is None:  # grey+alpha: unpack whole 4-byte pixels as if RGBA, then pair the bytes up
        whole = _decode_as(data, tile._replace(args="RGBA"))
        return (whole[:, :, 0::2].astype(np.uint16) << 8) | whole[:, :, 1::2]
    high = _decode_as(data, tile)
    low = _decode_as(data, tile._replace(args=low_mode))
    return (high.astype(np.uint16) << 8) | low


def _decode_as(data: bytes, tile: Any) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.tile = [tile]
    image.load()
    return np.asarray(image)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png(
    pixels: np.ndarray, compress_level: int = 1, icc_profile: bytes | None = None, exif: bytes | None = None
) -> bytes:
    """Encode (H, W, 3 or 4) uint16 ``pixels`` as a 16-bit RGB or RGBA PNG."""
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected (H, W, 3 or 4) uint16 pixels, got {pixels.dtype} {pixels.shape}")
    height, width, channels = pixels.shape
    colour_type = 2 if channels == 3 else 6
    rows = pixels.astype(">u2").view(np.uint8).reshape(height, width * channels * 2)
    bytes_per_pixel = channels * 2
    filtered = rows.copy()
    filtered[:, bytes_per_pixel:] -= rows[:, :-bytes_per_pixel]  # Sub: each byte minus the one a pixel left
    scanlines = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1)
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))]
    if icc_profile:
        parts.append(_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        parts.append(_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    parts.append(_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), compress_level)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)
