"""Content negotiation for ``POST /upscale``: the ``Accept`` header picks JSON or an image format.

An explicit ``format`` query parameter fixes the image format; ``Accept`` then only says whether the
answer is the image or JSON carrying it (an ``Accept`` that names neither gets the named format). Without ``format``, the best-rated acceptable type wins
(q-values, then the order given): ``image/png``, ``image/jpeg`` or ``image/webp`` (from the output
formats this server allows), ``application/json``, or a wildcard (``image/*``, ``*/*``: PNG). An
``Accept`` that names nothing the server can write is a 406. No header means PNG.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.codec import FORMAT_BY_MEDIA_TYPE
from server.errors import NotAcceptable, quote

DEFAULT_FORMAT = "png"


@dataclass(frozen=True)
class Answer:
    """What to send: an image ``format``, as the bare image or inside JSON."""

    format: str
    json: bool


def _ranges(accept: str) -> list[tuple[str, float, int]]:
    """(media range, q, position), skipping malformed q-values (as q=0, i.e. not acceptable)."""
    ranges = []
    for position, item in enumerate(accept.split(",")):
        parts = [part.strip() for part in item.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        q = 1.0
        for parameter in parts[1:]:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                q = q if 0.0 <= q <= 1.0 else 0.0
        ranges.append((media, q, position))
    return ranges


def negotiate(accept: str | None, explicit_format: str | None, allowed: tuple[str, ...]) -> Answer:
    """The answer's form; 406 when ``Accept`` rules out everything this server can send."""
    default = explicit_format or (DEFAULT_FORMAT if DEFAULT_FORMAT in allowed else allowed[0])
    if accept is None or not accept.strip():
        return Answer(default, json=False)
    candidates: list[tuple[float, int, str | None]] = []  # (q, -position, image format or None for JSON)
    for media, q, position in _ranges(accept):
        if q <= 0:
            continue
        if media == "application/json":
            candidates.append((q, -position, None))
        elif media in ("*/*", "image/*"):
            candidates.append((q, -position, default))
        elif FORMAT_BY_MEDIA_TYPE.get(media) in allowed:
            fmt = FORMAT_BY_MEDIA_TYPE[media]
            candidates.append((q, -position, explicit_format or fmt))
    if not candidates and explicit_format:  # the query names the format: Accept may only ask for JSON
        return Answer(explicit_format, json=False)
    if not candidates:
        types = ", ".join(f"image/{fmt}" for fmt in allowed)
        raise NotAcceptable(
            "not_acceptable", f"Accept {quote(accept)} names nothing this server sends; use {types} or application/json"
        )
    best = max(candidates)
    if best[2] is not None:
        return Answer(best[2], json=False)
    images = [candidate for candidate in candidates if candidate[2] is not None]
    return Answer(max(images)[2] if images and not explicit_format else default, json=True)
