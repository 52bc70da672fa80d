"""server/codec.py: decoding with limits, alpha handling and encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from server.codec import DecodedImage, DecodeLimits, EncodeOptions, check_output_options, decode_image, encode_image
from server.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from tests.server.helpers import encode, random_image

LIMITS = DecodeLimits(formats=("png", "jpeg", "webp"), max_input_pixels=64 * 64)


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
def test_decodes_allowed_formats_to_rgb_in_unit_range(fmt, name):
    image = random_image(20, 30)
    decoded = decode_image(encode(image, fmt), LIMITS)
    assert decoded.format == name
    assert decoded.size == (20, 30)
    assert decoded.rgb.shape == (3, 20, 30) and decoded.rgb.dtype == torch.float32
    assert 0.0 <= float(decoded.rgb.min()) and float(decoded.rgb.max()) <= 1.0
    assert decoded.alpha is None
    if fmt == "PNG":  # lossless: exact pixels
        assert torch.equal((decoded.rgb * 255).round().byte().permute(1, 2, 0), torch.from_numpy(np.array(image)))


def test_grey_and_palette_images_become_rgb():
    for mode in ("L", "P"):
        decoded = decode_image(encode(random_image(10, 12, mode=mode)), LIMITS)
        assert decoded.rgb.shape == (3, 10, 12)


#: An 8-bit sRGB input without alpha or metadata: what most encodes are.
PLAIN = DecodedImage(rgb=torch.zeros(3, 1, 1), alpha=None, format="png")


def test_alpha_is_kept_aside_and_reattached_at_output_size():
    image = random_image(10, 12, mode="RGBA")
    decoded = decode_image(encode(image), LIMITS)
    assert decoded.alpha is not None and decoded.alpha.shape == (10, 12)
    pixels = torch.zeros(20, 24, 3, dtype=torch.uint8)
    png = Image.open(io.BytesIO(encode_image(pixels, decoded, EncodeOptions("png"))))
    assert png.mode == "RGBA" and png.size == (24, 20)
    jpeg = Image.open(io.BytesIO(encode_image(pixels, decoded, EncodeOptions("jpeg"))))
    assert jpeg.mode == "RGB"


def test_opaque_alpha_is_dropped():
    image = random_image(6, 6).convert("RGBA")
    assert decode_image(encode(image), LIMITS).alpha is None


def test_too_many_pixels_is_413_before_decoding():
    with pytest.raises(PayloadTooLarge, match="65x64 = 4160 pixels"):
        decode_image(encode(random_image(64, 65)), LIMITS)


def test_disallowed_format_is_415():
    with pytest.raises(UnsupportedMediaType, match="'GIF' is not accepted"):
        decode_image(encode(random_image(8, 8), "GIF"), LIMITS)
    with pytest.raises(UnsupportedMediaType, match="allowed: png"):
        decode_image(encode(random_image(8, 8), "JPEG"), DecodeLimits(formats=("png",)))


@pytest.mark.parametrize("data", [b"", b"not an image at all", encode(random_image(8, 8))[:40]])
def test_garbage_is_400(data):
    with pytest.raises(BadRequest):
        decode_image(data, LIMITS)


def test_exif_orientation_is_applied():
    image = random_image(10, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    decoded = decode_image(encode(image, "JPEG", exif=exif), LIMITS)
    assert decoded.size == (20, 10)


@pytest.mark.parametrize(("fmt", "pillow"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_encode_formats(fmt, pillow):
    pixels = torch.randint(0, 256, (9, 11, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = encode_image(pixels, PLAIN, EncodeOptions(fmt, quality=80))
    image = Image.open(io.BytesIO(data))
    assert image.format == pillow and image.size == (11, 9)
    if fmt == "png":
        assert np.array_equal(np.asarray(image), pixels.numpy())


def test_output_options_are_checked():
    check_output_options("png", None, ("png", "jpeg"), 90)
    with pytest.raises(Unprocessable, match="format must be one of png, jpeg, got 'gif'"):
        check_output_options("gif", None, ("png", "jpeg"), 90)
    with pytest.raises(Unprocessable, match="quality must be between 1 and 100, got 0"):
        check_output_options("jpeg", 0, ("png", "jpeg"), 90)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_of_16bit_arrays_matches_pillows(orientation):
    from PIL import ImageOps

    from server.codec import _orient

    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(encode(image, "PNG", exif=exif)))))
    assert np.array_equal(_orient(pixels, orientation), expected)


def test_corrupt_exif_is_ignored_not_fatal():
    exif = Image.Exif()
    exif[0x0112] = 3
    data = bytearray(encode(random_image(8, 10), "JPEG", exif=exif))
    start = data.find(b"Exif\0\0")
    data[start + 10 : start + 14] = b"\xff\xff\xff\x00"  # the first IFD's offset points past the block
    decoded = decode_image(bytes(data), LIMITS)
    assert decoded.size == (8, 10) and decoded.exif is None
