"""Image bytes ⇄ tensors: decode with limits, validate, encode. No HTTP, no model.

Decoding checks the format against the allow-list and the pixel count against the limit *before*
decompressing (Pillow reads the size from the header), so an oversized or hostile image costs a
header parse, not its pixels. Then:

- **Depth.** 8-bit images become float RGB in [0, 1] by /255; 16-bit PNGs (grey, grey+alpha, RGB,
  RGBA) keep all 16 bits (``png16.py``) by /65535, and their output is a 16-bit PNG. Palette, grey
  and CMYK images become RGB; the model sees three channels.
- **Colour.** An embedded ICC profile of the matrix/TRC kind is converted to sRGB in float for the
  model and the output converted back and tagged with it (``colour.py``: wide gamuts survive). Other
  profiles are converted to sRGB by LittleCMS (8-bit images only; a 16-bit one is refused with 422)
  and the output is tagged sRGB. An unreadable profile is a 422.
- **Alpha** is kept aside as float and upscaled bicubically, then re-attached for PNG and WebP; JPEG
  has no alpha, so the image is composited onto ``EncodeOptions.background`` (white by default).
- **Metadata.** EXIF orientation is applied to the pixels. Everything else (EXIF, GPS, XMP, text
  chunks, comments) is dropped unless ``keep_exif`` asks to keep the EXIF block (its orientation then
  reset to normal, since the pixels are already upright).

An image that needs more than 8 bits of output (16-bit input) or a colour conversion back is
``exact``: its tiles are written as float into a float canvas instead of uint8.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageCms, UnidentifiedImageError

from server.colour import MatrixProfile, ProfileError, read_matrix_profile
from server.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType, quote
from server.png16 import is_16bit_png, read_16bit_png, write_png

#: Format names as the API spells them → Pillow's format names, and their media types.
PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
FORMAT_BY_MEDIA_TYPE = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/webp": "webp"}
_FORMAT_BY_PILLOW = {pillow: name for name, pillow in PILLOW_FORMATS.items()}
#: EXIF tag of the orientation, reset to 1 (upright) when EXIF is kept.
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DecodeLimits:
    """What an input image may be."""

    formats: tuple[str, ...] = ("png", "jpeg", "webp")
    max_input_pixels: int = 2048 * 2048


@dataclass(frozen=True)
class DecodedImage:
    """A decoded input: what the model reads and what the encoder needs to give the output back its form."""

    #: (3, h, w) float32, sRGB-encoded, in [0, 1] (or beyond, for wide-gamut colours converted from a profile).
    rgb: torch.Tensor
    #: (h, w) float32 in [0, 1], or None when fully opaque or absent.
    alpha: np.ndarray | None
    format: str
    #: Bits per sample of the input (8 or 16); 16 gives a 16-bit PNG output.
    bits: int = 8
    #: The profile to convert the output back into (None: the output is sRGB already).
    profile: MatrixProfile | None = None
    #: ICC profile bytes to embed in the output (the input's, or sRGB after a LittleCMS conversion).
    icc_profile: bytes | None = None
    #: The input's EXIF block (orientation reset), embedded only when asked for.
    exif: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) in pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])

    @property
    def exact(self) -> bool:
        """Whether the output must be kept as float until encoding (16-bit output or a colour conversion)."""
        return self.bits > 8 or self.profile is not None


def _open(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Open (not decode) and check format and pixel count; 400, 413 or 415."""
    if not data:
        raise BadRequest("empty_body", "request body is empty; send the image bytes or a multipart field 'image'")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and later errors) on decompression bombs; treat its warning as the 413 it is.
            # Its other warnings (a corrupt EXIF block, read while opening a JPEG) are not the client's concern.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise PayloadTooLarge("input_too_large", f"image has too many pixels: {error}") from None
    except UnidentifiedImageError:
        raise BadRequest("invalid_image", "body is not an image in a format this server can identify") from None
    except (OSError, ValueError, SyntaxError, struct.error) as error:
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
    if width < 1 or height < 1:
        raise BadRequest("invalid_image", f"image has no pixels ({width}x{height})")
    return image


def decode_image(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """Decode ``data`` or raise 400 (not an image), 413 (too many pixels), 415 (format) or 422 (profile)."""
    image = _open(data, limits)
    name = _FORMAT_BY_PILLOW[image.format or ""]
    try:
        if is_16bit_png(image):
            samples, bits = read_16bit_png(data, image), 16
            image.load()  # for its metadata (EXIF orientation)
        else:
            image.load()
            samples, bits = None, 8
        exif = _read_exif(image)
        orientation = exif.get(_ORIENTATION, 1)
        icc = image.info.get("icc_profile") or None
        upright = _TRANSPOSE[orientation](image) if samples is None and orientation in _TRANSPOSE else image
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as error:
        raise BadRequest("invalid_image", f"image data is corrupt: {error}") from None
    if samples is None:
        rgb, alpha, profile, icc = _from_8bit(upright, icc)
    else:
        rgb, alpha = _split_16bit(_orient(samples, orientation), image.info.get("transparency"))
        profile = _matrix_profile(icc, sixteen_bits=True)
        if profile is not None:
            rgb = profile.to_srgb(rgb)
    exif_bytes = None
    if len(exif):
        exif[_ORIENTATION] = 1
        exif_bytes = exif.tobytes()
    return DecodedImage(
        rgb=torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)),
        alpha=alpha,
        format=name,
        bits=bits,
        profile=profile,
        icc_profile=icc,
        exif=exif_bytes,
    )


def _matrix_profile(icc: bytes | None, sixteen_bits: bool) -> MatrixProfile | None:
    """The input's matrix/TRC profile when it is not sRGB already; 422 for a 16-bit image with another kind."""
    if not icc:
        return None
    try:
        profile = read_matrix_profile(icc)
    except ProfileError as error:
        raise Unprocessable("unsupported_icc_profile", f"the embedded ICC profile is unreadable: {error}") from None
    if profile is None and sixteen_bits:
        raise Unprocessable(
            "unsupported_icc_profile",
            "16-bit images are converted only from matrix/TRC RGB profiles; this one has another form",
        )
    if profile is None or profile.is_srgb():
        return None
    return profile


def _from_8bit(
    image: Image.Image, icc: bytes | None
) -> tuple[np.ndarray, np.ndarray | None, MatrixProfile | None, bytes | None]:
    """(3, h, w) float RGB, alpha, the profile to convert back into, the ICC bytes for the output."""
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        plane = np.asarray(rgba.getchannel("A"))
        if plane.min() < 255:
            alpha = plane.astype(np.float32) / 255.0
        image = rgba.convert("RGB")
    profile = None
    if icc:
        profile = _matrix_profile(icc, sixteen_bits=False)
        if profile is None and read_matrix_profile(icc) is None:  # grey, CMYK, LUT-based: LittleCMS
            if image.mode not in ("RGB", "L", "CMYK"):
                image = image.convert("RGB")
            image, icc = _littlecms_to_srgb(image, icc)
    if image.mode != "RGB":
        image = image.convert("RGB")
    rgb = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / 255.0
    if profile is not None:
        rgb = profile.to_srgb(rgb)
    return rgb, alpha, profile, icc


def _littlecms_to_srgb(image: Image.Image, icc: bytes) -> tuple[Image.Image, bytes]:
    """Convert with LittleCMS to sRGB (any profile it reads; 8 bits); the output is tagged sRGB."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as error:
        raise Unprocessable(
            "unsupported_icc_profile", f"cannot convert from the embedded ICC profile: {error}"
        ) from None
    assert converted is not None
    return converted, srgb.tobytes()


def _read_exif(image: Image.Image) -> Image.Exif:
    """The image's EXIF, or an empty block when it is corrupt: metadata is not worth refusing a picture for
    (and without a trustworthy orientation tag, the pixels are taken as stored)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            exif = image.getexif()
            dict(exif)  # reads every tag now, inside the guard
            return exif
        except (Warning, OSError, ValueError, SyntaxError, EOFError, KeyError, TypeError, struct.error):
            return Image.Exif()


#: EXIF orientation → the transposition that makes the image upright (as ``ImageOps.exif_transpose``).
_TRANSPOSE = {
    2: lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    3: lambda image: image.transpose(Image.Transpose.ROTATE_180),
    4: lambda image: image.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    5: lambda image: image.transpose(Image.Transpose.TRANSPOSE),
    6: lambda image: image.transpose(Image.Transpose.ROTATE_270),
    7: lambda image: image.transpose(Image.Transpose.TRANSVERSE),
    8: lambda image: image.transpose(Image.Transpose.ROTATE_90),
}
#: The same on (h, w, C) arrays (16-bit samples, which Pillow cannot hold).
_ORIENT_ARRAY = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _orient(samples: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to (h, w, C) samples."""
    turn = _ORIENT_ARRAY.get(orientation)
    return samples if turn is None else np.ascontiguousarray(turn(samples))


def _split_16bit(samples: np.ndarray, transparency: object) -> tuple[np.ndarray, np.ndarray | None]:
    """(h, w, C) uint16 → ((3, h, w) float RGB in [0, 1], alpha or None)."""
    values = samples.astype(np.float32) / 65535.0
    channels = samples.shape[2]
    colour = values[:, :, :3] if channels >= 3 else np.repeat(values[:, :, :1], 3, axis=2)
    alpha = values[:, :, -1] if channels in (2, 4) else None
    if alpha is None and transparency is not None:  # tRNS: one colour (or grey level) is transparent
        key = np.asarray(transparency if isinstance(transparency, tuple) else (transparency,), dtype=np.uint16)
        opaque = np.any(samples[:, :, : len(key)] != key, axis=2)
        alpha = opaque.astype(np.float32)
    if alpha is not None and alpha.min() >= 1.0:
        alpha = None
    return colour.transpose(2, 0, 1), alpha


@dataclass(frozen=True)
class EncodeOptions:
    """Output format and its settings."""

    format: str = "png"
    #: JPEG/WebP quality 1-100 (ignored for PNG).
    quality: int = 90
    #: zlib level 0-9 for PNG; low levels encode several times faster for slightly larger files.
    png_compress_level: int = 1
    #: Keep the input's EXIF block (orientation reset); by default all metadata is dropped.
    keep_exif: bool = False
    #: RGB in [0, 1] that a transparent input is composited onto for JPEG output.
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)


def check_output_options(fmt: str, quality: int | None, allowed: tuple[str, ...], default_quality: int) -> None:
    """422 unless ``fmt`` is an allowed output format and ``quality`` (if given) is in 1..100."""
    if fmt not in allowed:
        raise Unprocessable(
            "unsupported_output_format", f"format must be one of {', '.join(allowed)}, got {quote(fmt)}"
        )
    if quality is not None and not 1 <= quality <= 100:
        raise Unprocessable("invalid_quality", f"quality must be between 1 and 100, got {quality}")
    if not 1 <= default_quality <= 100:
        raise ValueError(f"default quality must be between 1 and 100, got {default_quality}")


def _resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic upscale of a float alpha plane to (H, W), clipped to [0, 1]."""
    plane = Image.fromarray(alpha.astype(np.float32), mode="F").resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(plane), 0.0, 1.0)


def encode_image(pixels: torch.Tensor, image: DecodedImage, options: EncodeOptions) -> bytes:
    """Encode the (H, W, 3) output canvas (uint8, or float32 for ``image.exact``) as ``options.format``.

    The canvas is in sRGB; a float canvas is converted back to the input's profile first. The input's
    alpha is resized and attached (PNG, WebP) or composited onto the background (JPEG).
    """
    size = (int(pixels.shape[0]), int(pixels.shape[1]))
    sixteen = image.bits > 8 and options.format == "png"
    if pixels.dtype == torch.uint8 and image.alpha is None:
        colour = pixels.numpy()  # the common case: no conversion at all
    else:
        values = pixels.numpy().astype(np.float32) / (255.0 if pixels.dtype == torch.uint8 else 1.0)
        if image.profile is not None:
            values = image.profile.from_srgb(values.transpose(2, 0, 1)).transpose(1, 2, 0)
        values = np.clip(values, 0.0, 1.0)
        alpha = None if image.alpha is None else _resize_alpha(image.alpha, size)[:, :, None]
        if alpha is not None and options.format == "jpeg":
            values = values * alpha + np.asarray(options.background, dtype=np.float32) * (1.0 - alpha)
        elif alpha is not None:
            values = np.concatenate([values, alpha], axis=2)
        levels = 65535.0 if sixteen else 255.0
        colour = np.rint(values * levels).astype(np.uint16 if sixteen else np.uint8)
    exif = image.exif if options.keep_exif else None
    if sixteen:
        return write_png(colour, options.png_compress_level, image.icc_profile, exif)
    output = Image.fromarray(colour)
    extra: dict[str, object] = {}
    if image.icc_profile:
        extra["icc_profile"] = image.icc_profile
    if exif:
        extra["exif"] = exif
    buffer = io.BytesIO()
    if options.format == "png":
        output.save(buffer, "PNG", compress_level=options.png_compress_level, **extra)
    else:
        output.save(buffer, PILLOW_FORMATS[options.format], quality=options.quality, **extra)
    return buffer.getvalue()
