"""ICC profiles built in the tests (never downloaded): matrix/TRC RGB profiles from primaries and a white point.

``display_p3()`` is Display P3 (DCI-P3 primaries, D65 white, the sRGB tone curve), the wide gamut of
current phones and laptops. The colorants are adapted to the ICC's D50 connection space with the
Bradford transform, as ICC v4 requires, and the profile is version 4 with ``mluc`` text tags, which
LittleCMS (Pillow's ImageCms) reads, so tests can check our conversions against it.
"""

from __future__ import annotations

import struct

import numpy as np

D50 = np.array([0.9642, 1.0, 0.8249])
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
#: The sRGB tone curve as an ICC parametric curve of type 3: (g, a, b, c, d).
SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def colorants(primaries: tuple[tuple[float, float], ...], white: tuple[float, float]) -> np.ndarray:
    """(3, 3) linear RGB → XYZ (D50) matrix, columns red, green, blue."""
    xyz = np.stack([_xyz(*primary) for primary in primaries], axis=1)
    white_xyz = _xyz(*white)
    matrix = xyz * np.linalg.solve(xyz, white_xyz)
    cone_source, cone_d50 = _BRADFORD @ white_xyz, _BRADFORD @ D50
    adapt = np.linalg.inv(_BRADFORD) @ np.diag(cone_d50 / cone_source) @ _BRADFORD
    return adapt @ matrix


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(xyz: np.ndarray) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(value) for value in xyz)


def _para_tag(params: tuple[float, ...]) -> bytes:
    function = {1: 0, 3: 1, 4: 2, 5: 3, 7: 4}[len(params)]
    return b"para\0\0\0\0" + struct.pack(">HH", function, 0) + b"".join(_s15(value) for value in params)


def _text_tag(text: str) -> bytes:
    encoded = text.encode("utf-16-be")
    return b"mluc\0\0\0\0" + struct.pack(">II", 1, 12) + b"enUS" + struct.pack(">II", len(encoded), 28) + encoded


def matrix_profile(description: str, matrix: np.ndarray, curve: tuple[float, ...] = SRGB_CURVE) -> bytes:
    """An ICC v4 display profile: RGB, XYZ connection space, colorants ``matrix``, one curve for all channels."""
    tags = [
        (b"desc", _text_tag(description)),
        (b"cprt", _text_tag("No copyright, test data")),
        (b"wtpt", _xyz_tag(D50)),
        (b"rXYZ", _xyz_tag(matrix[:, 0])),
        (b"gXYZ", _xyz_tag(matrix[:, 1])),
        (b"bXYZ", _xyz_tag(matrix[:, 2])),
        (b"rTRC", _para_tag(curve)),
        (b"gTRC", _para_tag(curve)),
        (b"bTRC", _para_tag(curve)),
    ]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, payload = [], b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        entries.append(struct.pack(">4sII", signature, offset + len(payload), len(data)))
        payload += data
    size = offset + len(payload)
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x04300000, b"mntr", b"RGB ", b"XYZ ")
    header += b"\0" * 12 + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + b"\0" * 4
    header += b"".join(_s15(value) for value in D50) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(entries) + payload


def display_p3() -> bytes:
    return matrix_profile(
        "Display P3 (test)", colorants(((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)), (0.3127, 0.3290))
    )


def srgb_like() -> bytes:
    return matrix_profile("sRGB (test)", colorants(((0.64, 0.33), (0.30, 0.60), (0.15, 0.06)), (0.3127, 0.3290)))
