"""Request headers the service reads and response headers it writes. Parsing errors are 400s.

- ``X-AnySR-Budget``: ``width=W`` (force a served width) and/or ``gflops=G`` (a FLOPs budget),
  comma-separated, each key at most once, e.g. ``gflops=40`` or ``width=0.7``.
- ``X-AnySR-Deadline-Ms``: a positive number of milliseconds.
- ``X-Request-ID``: echoed when it is a sane token, otherwise replaced by a fresh id.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from models.widths import check_width
from server.errors import BadRequest

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


@dataclass(frozen=True)
class Budget:
    """The parsed ``X-AnySR-Budget`` header."""

    width: float | None = None
    flops: int | None = None


def parse_budget(value: str | None, widths: Sequence[float]) -> Budget:
    """Parse ``X-AnySR-Budget`` (None or empty → no budget); a forced width must be one of the model's ``widths``."""
    if value is None or not value.strip():
        return Budget()
    found: dict[str, str] = {}
    for part in value.split(","):
        key, sep, raw = part.partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if not sep or key not in ("width", "gflops") or not raw:
            raise BadRequest(
                "invalid_budget",
                f"X-AnySR-Budget must be 'width=W' and/or 'gflops=G' (comma-separated), got {value!r}",
            )
        if key in found:
            raise BadRequest("invalid_budget", f"X-AnySR-Budget gives {key!r} twice: {value!r}")
        found[key] = raw
    width = None
    if "width" in found:
        try:
            width = check_width(float(found["width"]), widths)
        except ValueError:
            raise BadRequest(
                "invalid_budget", f"X-AnySR-Budget width must be one of {tuple(widths)}, got {found['width']!r}"
            ) from None
    flops = None
    if "gflops" in found:
        try:
            gflops = float(found["gflops"])
        except ValueError:
            gflops = math.nan
        if not math.isfinite(gflops) or gflops <= 0:
            raise BadRequest(
                "invalid_budget", f"X-AnySR-Budget gflops must be a positive number, got {found['gflops']!r}"
            )
        flops = int(gflops * 1e9)
    return Budget(width=width, flops=flops)


def parse_deadline_s(value: str | None) -> float | None:
    """Parse ``X-AnySR-Deadline-Ms`` into seconds (None when absent)."""
    if value is None or not value.strip():
        return None
    try:
        millis = float(value)
    except ValueError:
        millis = math.nan
    if not math.isfinite(millis) or millis <= 0:
        raise BadRequest(
            "invalid_deadline", f"X-AnySR-Deadline-Ms must be a positive number of milliseconds, got {value!r}"
        )
    return millis / 1e3


def request_id_from(value: str | None) -> str:
    """The client's ``X-Request-ID`` if it is a short safe token, else a fresh random id."""
    if value is not None and _REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


def server_timing(**durations_s: float) -> str:
    """``Server-Timing`` value, e.g. ``queue;dur=1.200, compute;dur=85.000`` (milliseconds)."""
    return ", ".join(f"{name};dur={seconds * 1e3:.3f}" for name, seconds in durations_s.items())
