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
from server.errors import BadRequest, quote

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


@dataclass(frozen=True)
class Budget:
    """The parsed ``X-AnySR-Budget`` header."""

    width: float | None = None
    flops: int | None = None


#: The grammar of X-AnySR-Budget, exactly (the OpenAPI document states it): one or two ``key=number``
#: items, comma-separated, keys ``width`` and ``gflops``, plain decimals; spaces around the tokens allowed.
_BUDGET_ITEM = r" *(width|gflops) *= *[0-9]{0,9}\.?[0-9]{1,9} *"
BUDGET_PATTERN = f"^{_BUDGET_ITEM}(,{_BUDGET_ITEM})?$"
_BUDGET = re.compile(BUDGET_PATTERN)
#: Longest value of the headers above that is read at all.
MAX_HEADER_LENGTH = 128
#: Longest deadline a request may give: an hour (the request timeout usually binds long before).
MAX_DEADLINE_MS = 3_600_000.0
#: A positive decimal number as JSON writes one (no sign, no spaces, no "inf"/"nan", no underscores).
_NUMBER = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_INTEGER = re.compile(r"^-?[0-9]{1,9}$")


def parse_number(name: str, value: str, code: str = "invalid_parameter") -> float:
    """A decimal number given as text (query parameter or header); 400 unless it is one, written plainly."""
    if len(value) > MAX_HEADER_LENGTH or not _NUMBER.match(value):
        raise BadRequest(code, f"{name} must be a number such as 2.5, got {quote(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise BadRequest(code, f"{name} must be a finite number, got {quote(value)}")
    return number


def parse_integer(name: str, value: str) -> int:
    if not _INTEGER.match(value):
        raise BadRequest("invalid_parameter", f"{name} must be a whole number, got {quote(value)}")
    return int(value)


def parse_boolean(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise BadRequest("invalid_parameter", f"{name} must be true or false, got {quote(value)}")
    return value == "true"


def parse_budget(value: str | None, widths: Sequence[float]) -> Budget:
    """Parse ``X-AnySR-Budget`` (None → no budget; an empty value is malformed, like any other); a forced
    width must be one of the model's ``widths``."""
    if value is None:
        return Budget()
    if len(value) > MAX_HEADER_LENGTH or not _BUDGET.match(value):
        raise BadRequest(
            "invalid_budget",
            f"X-AnySR-Budget must be 'width=W' and/or 'gflops=G' (comma-separated), got {quote(value)}",
        )
    found: dict[str, str] = {}
    for part in value.split(","):
        key, _, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if key in found:
            raise BadRequest("invalid_budget", f"X-AnySR-Budget gives {key!r} twice: {quote(value)}")
        found[key] = raw
    width = None
    if "width" in found:
        try:
            width = check_width(float(found["width"]), widths)
        except ValueError:
            raise BadRequest(
                "invalid_budget",
                f"X-AnySR-Budget width must be one of {tuple(widths)}, got {quote(found['width'])}",
            ) from None
    flops = None
    if "gflops" in found:
        gflops = float(found["gflops"])
        if gflops <= 0:
            raise BadRequest(
                "invalid_budget", f"X-AnySR-Budget gflops must be a positive number, got {quote(found['gflops'])}"
            )
        flops = int(gflops * 1e9)
    return Budget(width=width, flops=flops)


def parse_deadline_s(value: str | None) -> float | None:
    """Parse ``X-AnySR-Deadline-Ms`` into seconds (None when absent): a number in (0, 3,600,000]."""
    if value is None:
        return None
    millis = float(value) if len(value) <= MAX_HEADER_LENGTH and _NUMBER.match(value) else math.nan
    if not 0 < millis <= MAX_DEADLINE_MS:
        raise BadRequest(
            "invalid_deadline",
            f"X-AnySR-Deadline-Ms must be a positive number of milliseconds up to {MAX_DEADLINE_MS:.0f}, "
            f"got {quote(value)}",
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


#: Request headers that must appear at most once (list-valued ones such as Accept may repeat).
SINGLE_HEADERS: tuple[str, ...] = (
    "content-type",
    "content-length",
    "x-anysr-budget",
    "x-anysr-deadline-ms",
    "x-request-id",
    "authorization",
)


def check_not_repeated(
    query: list[tuple[str, str]], headers: list[tuple[bytes, bytes]], single_headers: tuple[str, ...] = SINGLE_HEADERS
) -> None:
    """400 if a query parameter, or one of ``single_headers``, is given more than once: which one the
    server would use is a guess the client should not have to make."""
    seen: set[str] = set()
    for name, _ in query:
        if name in seen:
            raise BadRequest("repeated_parameter", f"query parameter {quote(name)} is given more than once")
        seen.add(name)
    counts: dict[str, int] = {}
    for raw_name, _ in headers:
        name = raw_name.decode("latin-1").lower()
        if name in single_headers:
            counts[name] = counts.get(name, 0) + 1
            if counts[name] > 1:
                raise BadRequest("repeated_header", f"header {name!r} is given more than once")
