"""A hostile-input corpus, generated here (never downloaded): files every one of which must get a JSON 4xx.

Each entry is (name, body, content type, query). They cover broken and malicious containers (truncated,
bad checksums, lying sizes), decompression bombs (pixels, text and ICC chunks), hostile metadata, formats
that are not accepted, multipart bodies that lie, and tiny files that would cost minutes of compute.

``python -m tests.server.hostile_corpus --out DIR`` writes the files out;
``python -m tests.server.hostile_corpus --serve`` starts ``anysr serve`` (shipped weights), feeds it the
whole corpus, and prints every answer and the server's peak resident memory (sampled at 50 Hz).
"""

from __future__ import annotations

import argparse
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.server.icc import display_p3

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Sample:
    name: str
    body: bytes
    content_type: str = "image/png"
    query: str = "scale=2"


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png(
    width: int, height: int, depth: int = 8, colour: int = 2, extra: bytes = b"", idat: bytes | None = None
) -> bytes:
    if idat is None:
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 3)
        row = b"\0" + b"\x7f" * (width * channels * depth // 8)
        idat = zlib.compress(row * height)
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    return PNG_SIGNATURE + header + extra + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(encoded(Image.new("RGB", (8, 8), (90, 120, 200)), "JPEG"))
    start = data.find(b"\xff\xc0")
    data[start + 5 : start + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_with_canvas(width: int, height: int) -> bytes:
    """A VP8X WebP header claiming a canvas of ``width`` x ``height`` and nothing after it."""
    vp8x = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    payload = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def icc_with_tags(count: int) -> bytes:
    """An ICC profile (RGB, XYZ) whose tag table claims ``count`` entries."""
    header = struct.pack(">I4sI4s4s4s", 132, b"none", 0x04300000, b"mntr", b"RGB ", b"XYZ ") + b"\0" * 104
    return header + struct.pack(">I", count)


def multipart(parts: list[tuple[str, bytes]], boundary: str = "hostile", close: bool = True) -> bytes:
    body = b""
    for name, payload in parts:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="x.png"\r\n'.encode()
        body += b"Content-Type: image/png\r\n\r\n" + payload + b"\r\n"
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def corpus(max_body_bytes: int = 32 << 20) -> Iterator[Sample]:
    """Every hostile sample; each must be answered with a JSON 4xx."""
    good = encoded(Image.fromarray(np.full((16, 16, 3), 100, np.uint8)), "PNG")
    rng = np.random.default_rng(0)
    form = "multipart/form-data; boundary=hostile"

    # Not an image, or not one we take
    yield Sample("empty", b"")
    yield Sample("random-bytes", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    yield Sample("html", b"<!doctype html><script>alert(1)</script>", "image/png")
    yield Sample("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>', "image/svg+xml")
    yield Sample("svg-as-png", b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>')
    yield Sample("pdf", b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF")
    yield Sample("gif", encoded(Image.new("P", (8, 8)), "GIF"))
    yield Sample("bmp", encoded(Image.new("RGB", (8, 8)), "BMP"))
    yield Sample("tiff", encoded(Image.new("RGB", (8, 8)), "TIFF"))
    yield Sample("ico", encoded(Image.new("RGB", (16, 16)), "ICO"))
    yield Sample("png-as-text", good, "text/plain")
    yield Sample("polyglot-png-jpeg", PNG_SIGNATURE + encoded(Image.new("RGB", (8, 8)), "JPEG"))

    # Broken PNG containers
    yield Sample("png-signature-only", PNG_SIGNATURE)
    yield Sample("png-truncated-header", good[:20])
    yield Sample("png-truncated-data", good[: len(good) // 2])
    broken = bytearray(good)
    broken[29:33] = b"\0\0\0\0"  # IHDR checksum
    yield Sample("png-bad-header-crc", bytes(broken))
    yield Sample("png-zero-size", png(0, 0))
    yield Sample("png-bad-depth", png(8, 8, depth=7))
    yield Sample("png-bad-colour-type", png(8, 8, colour=5))
    yield Sample("png-idat-garbage", png(8, 8, idat=b"not zlib at all"))
    yield Sample("png-idat-short", png(64, 64, idat=zlib.compress(b"\0" * 10)))
    yield Sample("png-16bit-truncated", png(32, 32, depth=16)[:60])
    yield Sample("png-wide-empty", png(65535, 1, idat=zlib.compress(b"")))

    # Bombs: pixels, text, ICC
    yield Sample("png-pixel-bomb", png(100_000, 100_000, idat=zlib.compress(b"\0" * 1000)))
    yield Sample("png-just-over-the-pixel-limit", png(2049, 2048, colour=0, idat=zlib.compress(b"\0" * 100)))
    yield Sample("png-ztxt-bomb", png(4, 4, extra=chunk(b"zTXt", b"k\0\0" + zlib.compress(b"\0" * (64 << 20)))))
    yield Sample("png-iccp-bomb", png(4, 4, extra=chunk(b"iCCP", b"p\0\0" + zlib.compress(b"\0" * (64 << 20)))))
    yield Sample("jpeg-pixel-bomb", jpeg_with_size(65_000, 65_000), "image/jpeg")
    yield Sample("webp-canvas-bomb", webp_with_canvas(16_000, 16_000), "image/webp")

    # Hostile colour profiles
    yield Sample("icc-garbage", png(4, 4, extra=chunk(b"iCCP", b"p\0\0" + zlib.compress(b"garbage" * 40))))
    yield Sample("icc-huge-tag-count", png(4, 4, extra=chunk(b"iCCP", b"p\0\0" + zlib.compress(icc_with_tags(10**6)))))
    p3 = bytearray(display_p3())
    p3[-8:] = b"\xff" * 8  # the last curve's parameters turned into nonsense, and its size field too
    p3[132 + 8 : 132 + 12] = b"\xff\xff\xff\x00"
    yield Sample("icc-tag-outside-profile", png(4, 4, extra=chunk(b"iCCP", b"p\0\0" + zlib.compress(bytes(p3)))))

    # Broken JPEG and WebP
    jpeg = encoded(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), "JPEG")
    yield Sample("jpeg-soi-only", b"\xff\xd8", "image/jpeg")
    yield Sample("jpeg-truncated", jpeg[: len(jpeg) // 2], "image/jpeg")
    yield Sample("jpeg-zero-size", jpeg_with_size(0, 0), "image/jpeg")
    webp = encoded(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), "WEBP")
    yield Sample("webp-truncated", webp[: len(webp) // 2], "image/webp")
    yield Sample("webp-riff-lies", b"RIFF\xff\xff\xff\x7fWEBPVP8 " + webp[20:60], "image/webp")

    # Valid files, hostile requests: minutes of compute in a few kB, and outputs over the limit
    one_bit = Image.new("1", (2048, 2048), 0)
    yield Sample("one-bit-2048-at-x2", encoded(one_bit, "PNG"))
    yield Sample("one-row-of-4-megapixels", png(4_000_000, 1, colour=0))
    yield Sample("scale-out-of-range", good, query="scale=64")
    yield Sample("scale-rounds-to-one", good, query="scale=1.01")

    # Multipart that lies
    yield Sample("multipart-no-closing-boundary", multipart([("image", good)], close=False), form)
    yield Sample("multipart-no-image-field", multipart([("picture", good)]), form)
    yield Sample("multipart-two-files", multipart([("image", good), ("file", good)]), form)
    yield Sample("multipart-no-boundary", b"--x\r\n\r\n--x--", "multipart/form-data")
    yield Sample("multipart-garbage-image", multipart([("image", b"\0" * 100)]), form)

    # Too many bytes
    yield Sample("body-over-the-limit", b"\0" * (max_body_bytes + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the corpus to this folder")
    parser.add_argument("--serve", action="store_true", help="feed it to a fresh anysr serve and report memory")
    args = parser.parse_args()
    samples = list(corpus())
    if args.out:
        from pathlib import Path

        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        for sample in samples:
            (folder / f"{sample.name}.bin").write_bytes(sample.body)
        print(f"{len(samples)} files in {folder}")
    if args.serve:
        from tests.server.hostile_run import feed_real_server

        report = feed_real_server(samples)
        for name, status, code in report.answers:
            print(f"{status} {code:<28} {name}")
        print(
            f"peak RSS {report.peak_rss_mib:.0f} MiB (after warm-up {report.baseline_rss_mib:.0f} MiB, rise "
            f"{report.peak_rss_mib - report.baseline_rss_mib:.0f} MiB) over {len(samples)} files in "
            f"{report.seconds:.1f} s"
        )


if __name__ == "__main__":
    main()
