"""Image fidelity end to end: 16-bit in gives 16-bit out, ICC profiles round-trip (Display P3 built here),
transparent images flatten onto the stated background for JPEG, Accept picks the format, metadata is
stripped unless EXIF is asked for.

The model is replaced by nearest-neighbour sampling at each tile's query coordinates (a runner with the
server's contract), so every output pixel is some input pixel and colour or depth loss anywhere in the
pipeline shows up exactly.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from server.codec import DecodeLimits, decode_image
from server.colour import read_matrix_profile
from tests.server.helpers import TINY_META, TestClient, encode, fast_settings, make_app
from tests.server.icc import display_p3

RAW = {"content-type": "image/png"}


class NearestRunner:
    """Nearest-neighbour 'super-resolution' with the runner's contract (uint8, or float for exact keys)."""

    model = TINY_META
    device = torch.device("cpu")
    precision = "fp32"
    precision_reason = "requested"

    def warm_up(self, widths, lr_size, scale=2.0):
        return dict.fromkeys(widths, 1e12)

    def run_batch(self, jobs):
        outputs = []
        for job in jobs:
            height, width = job.key.lr_shape
            rows = ((job.coord_y + 1) / 2 * height).floor().long().clamp(0, height - 1)
            cols = ((job.coord_x + 1) / 2 * width).floor().long().clamp(0, width - 1)
            pixels = job.lr[:, rows][:, :, cols].permute(1, 2, 0)
            if not job.key.exact:
                pixels = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
            outputs.append(pixels.contiguous())
        return outputs


@pytest.fixture(scope="module")
def client():
    with TestClient(make_app(fast_settings(tile_size=32), runner=NearestRunner())) as test_client:
        yield test_client


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png16(samples: np.ndarray, colour_type: int, interlace: bool = False) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour), filter type 0 (Adam7 if asked)."""
    height, width = samples.shape[:2]
    data = samples.reshape(height, width, -1).astype(">u2")
    if interlace:
        passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
        raw = b""
        for top, left, step_y, step_x in passes:
            part = data[top::step_y, left::step_x]
            if part.size:
                raw += b"".join(b"\0" + row.tobytes() for row in part)
    else:
        raw = b"".join(b"\0" + row.tobytes() for row in data)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, int(interlace))
    body = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def read_png16(data: bytes) -> np.ndarray:
    """A 16-bit RGB(A) PNG as written by the server's encoder (filter Sub), decoded by hand."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        payload = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        position += 12 + length
    width, height, depth, colour_type = header[:4]
    assert depth == 16
    channels = {2: 3, 6: 4}[colour_type]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels * 2)
    assert set(rows[:, 0]) <= {1}
    bpp = channels * 2
    out = rows[:, 1:].copy()
    for column in range(bpp, out.shape[1]):  # undo Sub
        out[:, column] += out[:, column - bpp]
    return out.view(">u2").reshape(height, width, channels).astype(np.uint16)


def upscale(client, body: bytes, query: str = "scale=2", headers: dict | None = None):
    return client.post(f"/upscale?{query}", content=body, headers=RAW | (headers or {}))


# -- 16 bits ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("colour_type", "channels"), [(0, 1), (2, 3), (4, 2), (6, 4)])
@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_png_in_gives_16bit_png_out_with_every_bit(client, colour_type, channels, interlace):
    rng = np.random.default_rng(colour_type)
    samples = rng.integers(0, 65536, size=(12, 10, channels), dtype=np.uint16)
    if channels in (2, 4):
        samples[..., -1] = 65535  # opaque: alpha is resized bicubically, colour by the model
        samples[:6, :, -1] = 1000
    body = png16(samples, colour_type, interlace)
    decoded = decode_image(body, DecodeLimits())
    assert decoded.bits == 16 and decoded.exact
    response = upscale(client, body)
    assert response.status_code == 200, response.text
    out = read_png16(response.content)
    assert out.shape == (24, 20, 4 if channels in (2, 4) else 3)
    colour = samples[..., :3] if channels >= 3 else np.repeat(samples[..., :1], 3, axis=2)
    expected = colour.repeat(2, axis=0).repeat(2, axis=1)  # nearest neighbour at x2
    assert np.array_equal(out[..., :3], expected)  # no bit lost: not even the lowest of 16
    if channels in (2, 4):
        assert out[-1, -1, 3] == 65535 and abs(int(out[0, 0, 3]) - 1000) <= 1


def test_16bit_greyscale_is_not_clipped(client):
    """The issue's case: a 16-bit grey ramp came back 98.8% white."""
    ramp = np.linspace(0, 65535, 16 * 16).astype(np.uint16).reshape(16, 16, 1)
    out = read_png16(upscale(client, png16(ramp, 0)).content)
    assert (out == 65535).mean() < 0.01
    assert np.array_equal(out[::2, ::2, 0], ramp[:, :, 0])


def test_16bit_input_to_jpeg_is_8bit(client):
    samples = np.full((8, 8, 3), 40000, dtype=np.uint16)
    response = upscale(client, png16(samples, 2), "scale=2&format=jpeg")
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "JPEG" and abs(int(np.asarray(image)[0, 0, 0]) - round(40000 / 257)) <= 2


# -- colour profiles ----------------------------------------------------------------------------------


def p3_image() -> Image.Image:
    """Saturated Display P3 colours (pure red, green, blue: outside sRGB) next to in-gamut ones."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 60, 60), (60, 60, 200), (128, 128, 128), (250, 200, 20)]
    pixels = np.array([colours[(row // 2 + col // 2) % len(colours)] for row in range(14) for col in range(12)])
    return Image.fromarray(pixels.reshape(14, 12, 3).astype(np.uint8))


def test_the_model_sees_srgb_as_littlecms_converts_it_for_in_gamut_colours():
    profile = display_p3()
    image = p3_image()
    decoded = decode_image(encode(image, icc_profile=profile), DecodeLimits())
    assert decoded.profile is not None and decoded.exact
    reference = ImageCms.profileToProfile(
        image, ImageCms.ImageCmsProfile(io.BytesIO(profile)), ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    ours = decoded.rgb.permute(1, 2, 0).numpy() * 255
    in_gamut = ((ours >= 0) & (ours <= 255)).all(axis=2)
    assert in_gamut.any() and not in_gamut.all()  # both kinds are there
    assert np.abs(ours[in_gamut] - np.asarray(reference, dtype=np.float64)[in_gamut]).max() <= 1.0
    # Out of gamut, the model sees extended sRGB values (beyond [0, 1]) rather than clipped ones.
    assert ours.min() < -10 or ours.max() > 265


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_a_display_p3_image_round_trips_without_a_colour_shift(client, fmt):
    profile = display_p3()
    image = p3_image()
    quality = "&quality=100" if fmt != "png" else ""
    if fmt != "png":
        image = image.resize((24, 28), Image.Resampling.NEAREST)  # colour blocks of 4x4 pixels, 8x8 after x2
    response = upscale(client, encode(image, icc_profile=profile), f"scale=2&format={fmt}{quality}")
    assert response.status_code == 200, response.text
    out = Image.open(io.BytesIO(response.content))
    assert out.info.get("icc_profile") == profile  # converted back to, and tagged with, the input's profile
    expected = np.asarray(image).repeat(2, axis=0).repeat(2, axis=1).astype(int)
    served = np.asarray(out.convert("RGB")).astype(int)
    if fmt == "png":
        assert np.abs(served - expected).max() <= 1  # saturated P3 colours included: nothing was clipped to sRGB
    else:  # lossy formats: the centres of the flat 8x8 blocks (chroma subsampling smears their edges)
        assert np.abs(served[3::8, 3::8] - expected[3::8, 3::8]).max() <= 8


def test_an_srgb_profile_needs_no_conversion_and_is_kept(client):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert read_matrix_profile(srgb).is_srgb()
    decoded = decode_image(encode(p3_image(), icc_profile=srgb), DecodeLimits())
    assert decoded.profile is None and not decoded.exact and decoded.icc_profile == srgb


@pytest.mark.parametrize("profile", [b"garbage", b"\0" * 200])
def test_an_unreadable_profile_is_422(client, profile):
    response = upscale(client, encode(p3_image(), icc_profile=profile))
    assert response.status_code == 422 and response.json()["error"]["code"] == "unsupported_icc_profile"


def test_a_grey_profile_goes_through_littlecms_and_the_output_is_tagged_srgb(client):
    grey = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # not a matrix/TRC RGB profile
    image = Image.fromarray(np.full((8, 8, 3), 128, np.uint8))
    response = upscale(client, encode(image, icc_profile=grey))
    assert response.status_code in (200, 422), response.text  # LittleCMS may refuse a Lab profile on RGB
    if response.status_code == 200:
        tagged = Image.open(io.BytesIO(response.content)).info.get("icc_profile")
        assert read_matrix_profile(tagged).is_srgb()


# -- alpha, JPEG and the background ---------------------------------------------------------------------


def half_transparent() -> Image.Image:
    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[:, 4:, 3] = 255  # left half fully transparent, right half opaque red
    return Image.fromarray(pixels)


def test_rgba_to_jpeg_flattens_onto_the_documented_white(client):
    response = upscale(client, encode(half_transparent()), "scale=2&format=jpeg&quality=100")
    out = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
    assert np.abs(out[4:12, 0:4] - 255).max() <= 3  # transparent → white, not black
    assert np.abs(out[4:12, 12:16] - [200, 0, 0]).max() <= 6


def test_the_background_is_a_setting():
    with TestClient(make_app(fast_settings(jpeg_background="0000ff"), runner=NearestRunner())) as client:
        response = upscale(client, encode(half_transparent()), "scale=2&format=jpeg&quality=100")
    out = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
    assert np.abs(out[4:12, 0:4] - [0, 0, 255]).max() <= 6


def test_rgba_to_png_keeps_alpha(client):
    out = Image.open(io.BytesIO(upscale(client, encode(half_transparent())).content))
    assert out.mode == "RGBA" and np.asarray(out)[0, 0, 3] == 0 and np.asarray(out)[0, -1, 3] == 255


# -- Accept ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "query", "media_type"),
    [
        (None, "", "image/png"),
        ("image/webp", "", "image/webp"),
        ("image/jpeg;q=0.5, image/png", "", "image/png"),
        ("image/jpeg, image/png;q=0.9", "", "image/jpeg"),
        ("image/*", "", "image/png"),
        ("*/*", "", "image/png"),
        ("text/html, image/webp;q=0.1", "", "image/webp"),
        ("image/webp", "&format=jpeg", "image/jpeg"),  # an explicit format wins
        ("image/gif", "&format=jpeg", "image/jpeg"),
    ],
)
def test_accept_picks_the_format_when_format_is_absent(client, accept, query, media_type):
    headers = {} if accept is None else {"accept": accept}
    response = upscale(client, encode(half_transparent()), f"scale=2{query}", headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["vary"] == "Accept"
    assert Image.open(io.BytesIO(response.content)).get_format_mimetype() == media_type


def test_json_answer_carries_the_negotiated_image_format(client):
    response = upscale(client, encode(half_transparent()), "scale=2", {"accept": "application/json, image/webp;q=0.5"})
    assert response.json()["media_type"] == "image/webp"


@pytest.mark.parametrize("accept", ["text/html", "image/gif", "image/png;q=0"])
def test_an_accept_nothing_can_satisfy_is_406(client, accept):
    response = upscale(client, encode(half_transparent()), "scale=2", {"accept": accept})
    assert response.status_code == 406 and response.json()["error"]["code"] == "not_acceptable"


# -- metadata ----------------------------------------------------------------------------------------


def photo_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "TestCamera"  # Make
    exif[0x0112] = 6  # rotate 90° clockwise on display
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 22.0, 5.0)
    pixels = np.zeros((10, 16, 3), np.uint8)
    pixels[:, :8] = 255
    return encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)


def test_metadata_is_stripped_by_default_and_orientation_applied(client):
    response = client.post("/upscale?scale=2", content=photo_with_exif(), headers={"content-type": "image/jpeg"})
    out = Image.open(io.BytesIO(response.content))
    assert out.size == (20, 32)  # 10x16 turned upright: 16x10, doubled
    assert len(out.getexif()) == 0 and "exif" not in out.info


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_keep_exif_keeps_it_with_the_orientation_reset(client, fmt):
    response = client.post(
        f"/upscale?scale=2&keep_exif=true&format={fmt}",
        content=photo_with_exif(),
        headers={"content-type": "image/jpeg"},
    )
    out = Image.open(io.BytesIO(response.content))
    exif = out.getexif()
    assert exif[0x010F] == "TestCamera" and exif.get(0x0112) == 1
    assert exif.get_ifd(0x8825)[1] == "N"  # asked for: kept, GPS included
    assert out.size == (20, 32)
