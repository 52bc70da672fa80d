"""What the generator remembers about each request, and how it reads the server's answer.

The facts come from the response alone: the status, the ``X-AnySR-Width`` / ``-FLOPs`` / ``-Reason``
headers, ``Server-Timing`` (queue, decode, compute, encode, total in ms), the error JSON
``{"error": {"code", "message"}}`` and the output image's size (read from its header, not decoded).
Outcomes that never reached a status are named by the client: ``client_dropped`` (the in-flight cap
was hit, so the request was never sent), ``client_timeout`` and ``connection_error``.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from PIL import Image, UnidentifiedImageError

CLIENT_DROPPED = "client_dropped"
CLIENT_TIMEOUT = "client_timeout"
CONNECTION_ERROR = "connection_error"
CLIENT_OUTCOMES: tuple[str, ...] = (CLIENT_DROPPED, CLIENT_TIMEOUT, CONNECTION_ERROR)
#: Statuses that mean "the server refused the work" (per-client cap, queue full, deadline unreachable, draining).
REJECTION_STATUSES: tuple[str, ...] = ("429", "503")


@dataclass
class RequestRecord:
    """One request of a phase. Times are seconds from the phase start (``time.perf_counter`` based).

    ``latency_s`` runs from the *scheduled* time, not the send time, so a generator that fell behind
    is charged to the latency rather than hidden (coordinated omission).
    """

    index: int
    scheduled_s: float
    outcome: str  # an HTTP status as text ("200", "503") or one of CLIENT_OUTCOMES
    scale: float
    input_pixels: int
    budget: str | None = None
    deadline_ms: str | None = None
    sent_s: float | None = None
    finished_s: float | None = None
    error_code: str | None = None
    width: float | None = None
    flops: int | None = None
    reason: str | None = None
    output_pixels: int | None = None
    server_queue_ms: float | None = None
    server_compute_ms: float | None = None
    server_total_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "200"

    @property
    def latency_s(self) -> float | None:
        return None if self.finished_s is None else self.finished_s - self.scheduled_s

    @property
    def lag_s(self) -> float | None:
        """How late the generator sent it (should be ~0; large values mean the client machine is overloaded)."""
        return None if self.sent_s is None else self.sent_s - self.scheduled_s

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["latency_s"] = self.latency_s
        return row


RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord)) + ("latency_s",)


def parse_server_timing(value: str | None) -> dict[str, float]:
    """``queue;dur=1.2, compute;dur=85`` → ``{"queue": 1.2, "compute": 85.0}`` (ms); malformed parts are skipped."""
    timings: dict[str, float] = {}
    if not value:
        return timings
    for metric in value.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, raw = param.partition("=")
            if key.strip().lower() == "dur" and name:
                try:
                    timings[name] = float(raw.strip().strip('"'))
                except ValueError:
                    pass
    return timings


def error_code_of(body: bytes) -> str | None:
    """The ``error.code`` of an error body, or None if it is not the service's error JSON."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = data["error"].get("code")
        return str(code) if code is not None else None
    return None


def image_pixels(body: bytes) -> int | None:
    """Pixel count of an encoded image, from its header only (Pillow opens lazily)."""
    try:
        with Image.open(io.BytesIO(body)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return width * height


def _float_or_none(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _int_or_none(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def fill_from_response(record: RequestRecord, status: int, headers: Any, body: bytes) -> None:
    """Copy what the response says into ``record`` (``headers``: any case-insensitive mapping)."""
    record.outcome = str(status)
    if status != 200:
        record.error_code = error_code_of(body)
        return
    record.width = _float_or_none(headers.get("x-anysr-width"))
    record.flops = _int_or_none(headers.get("x-anysr-flops"))
    record.reason = headers.get("x-anysr-reason")
    timing = parse_server_timing(headers.get("server-timing"))
    record.server_queue_ms = timing.get("queue")
    record.server_compute_ms = timing.get("compute")
    record.server_total_ms = timing.get("total")
    record.output_pixels = image_pixels(body)
