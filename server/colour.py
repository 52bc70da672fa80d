"""ICC colour: RGB matrix/TRC profiles to and from sRGB in float, so wide-gamut colours survive the model.

The model was trained on sRGB images, so pixels tagged with another RGB profile are converted to sRGB
before it runs and back to their own profile after, and the output carries the input's profile.
Both conversions run in float32 without clipping (extended sRGB: the transfer curve is mirrored
below zero and continued above one), so a saturated Display P3 red, which has no sRGB equivalent in
[0, 1], comes back as itself instead of the nearest sRGB colour.

Only *matrix/TRC* RGB profiles are read here (three colorants rXYZ/gXYZ/bXYZ and three tone curves,
``curv`` or ``para``): the form of sRGB, Display P3, Adobe RGB, ProPhoto and most camera and screen
profiles. :func:`read_matrix_profile` returns None for anything else (LUT-based, grey, CMYK), which the
codec hands to LittleCMS instead (8-bit only). No HTTP here, no torch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

#: The sRGB colorants adapted to the ICC's D50 connection space (Bradford), as in the sRGB ICC profile.
SRGB_TO_XYZ_D50 = np.array(
    [
        [0.4360747, 0.3850649, 0.1430804],
        [0.2225045, 0.7168786, 0.0606169],
        [0.0139322, 0.0971045, 0.7141733],
    ]
)
#: Profiles whose conversion to sRGB differs from the identity by less than this are treated as sRGB.
SRGB_TOLERANCE = 2e-3
#: Points at which tone curves are compared with sRGB's.
_PROBES = np.linspace(0.0, 1.0, 17)


class ProfileError(ValueError):
    """The ICC profile is malformed."""


def srgb_decode(values: np.ndarray) -> np.ndarray:
    """sRGB-encoded → linear light, extended to all reals (mirrored below zero)."""
    magnitude = np.abs(values)
    linear = np.where(magnitude <= 0.04045, magnitude / 12.92, ((magnitude + 0.055) / 1.055) ** 2.4)
    return np.copysign(linear, values)


def srgb_encode(values: np.ndarray) -> np.ndarray:
    """Linear light → sRGB-encoded, extended to all reals (mirrored below zero)."""
    magnitude = np.abs(values)
    encoded = np.where(magnitude <= 0.0031308, magnitude * 12.92, 1.055 * magnitude ** (1 / 2.4) - 0.055)
    return np.copysign(encoded, values)


@dataclass(frozen=True)
class ToneCurve:
    """One channel's transfer curve: a gamma, an ICC parametric function, or a sampled table."""

    kind: str  # "gamma", "para" or "table"
    params: tuple[float, ...] = ()
    table: tuple[float, ...] = ()

    def to_linear(self, values: np.ndarray) -> np.ndarray:
        """Encoded → linear, mirrored below zero (and continued above one where the form allows)."""
        magnitude = np.abs(values)
        if self.kind == "gamma":
            linear = magnitude ** self.params[0]
        elif self.kind == "para":
            linear = _parametric(magnitude, self.params)
        else:
            samples = np.asarray(self.table)
            linear = np.interp(np.minimum(magnitude, 1.0), np.linspace(0.0, 1.0, len(samples)), samples)
        return np.copysign(linear, values)

    def to_encoded(self, values: np.ndarray) -> np.ndarray:
        """Linear → encoded for values in [0, 1] (the inverse, by interpolation on a fine grid)."""
        grid = np.linspace(0.0, 1.0, 4097)
        curve = np.maximum.accumulate(self.to_linear(grid))  # monotone, as a tone curve must be
        return np.interp(np.clip(values, 0.0, 1.0), curve, grid)


def _parametric(x: np.ndarray, p: tuple[float, ...]) -> np.ndarray:
    """ICC parametricCurveType, function types 0-4 (by the number of parameters)."""
    g = p[0]
    if len(p) == 1:
        return x**g
    a, b = p[1], p[2]
    if len(p) == 3:
        return np.where(x >= -b / a, np.maximum(a * x + b, 0.0) ** g, 0.0)
    if len(p) == 4:
        return np.where(x >= -b / a, np.maximum(a * x + b, 0.0) ** g + p[3], p[3])
    c, d = p[3], p[4]
    e, f = (p[5], p[6]) if len(p) == 7 else (0.0, 0.0)
    return np.where(x >= d, np.maximum(a * x + b, 0.0) ** g + e, c * x + f)


@dataclass(frozen=True)
class MatrixProfile:
    """An RGB matrix/TRC profile: linear RGB → XYZ (D50) by ``matrix``, one tone curve per channel."""

    matrix: np.ndarray  # (3, 3), columns are the red, green and blue colorants
    curves: tuple[ToneCurve, ToneCurve, ToneCurve]

    @property
    def to_srgb_matrix(self) -> np.ndarray:
        return np.linalg.solve(SRGB_TO_XYZ_D50, self.matrix)

    def is_srgb(self) -> bool:
        """Whether converting to sRGB would change nothing that 16 bits can show."""
        if np.abs(self.to_srgb_matrix - np.eye(3)).max() > SRGB_TOLERANCE:
            return False
        reference = srgb_decode(_PROBES)
        return all(np.abs(curve.to_linear(_PROBES) - reference).max() <= SRGB_TOLERANCE for curve in self.curves)

    def to_srgb(self, rgb: np.ndarray) -> np.ndarray:
        """(3, ...) values encoded in this profile → extended sRGB-encoded, float32, unclipped."""
        linear = np.stack([curve.to_linear(channel) for curve, channel in zip(self.curves, rgb)])
        converted = np.tensordot(self.to_srgb_matrix, linear, axes=1)
        return srgb_encode(converted).astype(np.float32)

    def from_srgb(self, rgb: np.ndarray) -> np.ndarray:
        """(3, ...) extended sRGB-encoded → encoded in this profile, clipped to [0, 1], float32."""
        linear = np.tensordot(np.linalg.inv(self.to_srgb_matrix), srgb_decode(rgb), axes=1)
        return np.stack([curve.to_encoded(channel) for curve, channel in zip(self.curves, linear)]).astype(np.float32)


def _tags(data: bytes) -> dict[bytes, bytes]:
    if len(data) < 132:
        raise ProfileError(f"an ICC profile has a 128-byte header and a tag table; this one has {len(data)} bytes")
    (count,) = struct.unpack_from(">I", data, 128)
    if count > 200 or 132 + 12 * count > len(data):
        raise ProfileError(f"ICC tag table of {count} entries does not fit in {len(data)} bytes")
    tags = {}
    for index in range(count):
        signature, offset, size = struct.unpack_from(">4sII", data, 132 + 12 * index)
        if offset + size > len(data) or size < 8:
            raise ProfileError(f"ICC tag {signature!r} lies outside the profile")
        tags[signature] = data[offset : offset + size]
    return tags


def _xyz(tag: bytes) -> np.ndarray:
    if tag[:4] != b"XYZ " or len(tag) < 20:
        raise ProfileError("colorant tag is not an XYZ value")
    return np.array(struct.unpack_from(">3i", tag, 8), dtype=np.float64) / 65536.0


def _curve(tag: bytes) -> ToneCurve:
    kind = tag[:4]
    if kind == b"curv":
        (count,) = struct.unpack_from(">I", tag, 8)
        if 12 + 2 * count > len(tag):
            raise ProfileError("tone curve table runs past its tag")
        if count == 0:
            return ToneCurve("gamma", (1.0,))
        if count == 1:
            return ToneCurve("gamma", (struct.unpack_from(">H", tag, 12)[0] / 256.0,))
        table = np.frombuffer(tag, dtype=">u2", count=count, offset=12) / 65535.0
        return ToneCurve("table", table=tuple(float(value) for value in table))
    if kind == b"para":
        (function,) = struct.unpack_from(">H", tag, 8)
        counts = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}
        if function not in counts or 12 + 4 * counts[function] > len(tag):
            raise ProfileError(f"unknown parametric curve function {function}")
        params = struct.unpack_from(f">{counts[function]}i", tag, 12)
        return ToneCurve("para", tuple(value / 65536.0 for value in params))
    raise ProfileError(f"tone curve of type {kind!r} is not supported")


def read_matrix_profile(data: bytes) -> MatrixProfile | None:
    """The matrix/TRC form of an RGB display-like profile, or None when it has another form.

    Raises :class:`ProfileError` when the bytes are not a well-formed profile of that form.
    """
    if len(data) >= 24 and (data[16:20] != b"RGB " or data[20:24] != b"XYZ "):
        return None
    tags = _tags(data)
    needed = (b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC")
    if not all(name in tags for name in needed):
        return None
    matrix = np.stack([_xyz(tags[name]) for name in (b"rXYZ", b"gXYZ", b"bXYZ")], axis=1)
    if abs(np.linalg.det(matrix)) < 1e-6:
        raise ProfileError("the profile's colorants are degenerate (no inverse)")
    curves = (_curve(tags[b"rTRC"]), _curve(tags[b"gTRC"]), _curve(tags[b"bTRC"]))
    return MatrixProfile(matrix=matrix, curves=curves)
