"""The request body of ``POST /upscale``: the image bytes from a raw body or a multipart form.

- Raw: ``Content-Type: image/png|jpeg|webp`` (from ``input_formats``) and the bytes as the body.
- Multipart (``multipart/form-data``): one file field named ``image`` (or ``file``, what
  ``curl -F file=@x.png`` sends). The body must end with its closing boundary: a truncated upload
  is a 400 ``invalid_multipart``, not a missing field.

The body's size cap, read timeout and drain deadline are enforced below this, on the ASGI receive
channel (``server/middleware.py``); a client that disconnects while sending surfaces as Starlette's
``ClientDisconnect``, which the error handlers answer as 499.
"""

from __future__ import annotations

import re

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from server.codec import FORMAT_BY_MEDIA_TYPE
from server.errors import BadRequest, UnsupportedMediaType, quote

#: Multipart field names that may carry the image.
IMAGE_FIELDS = ("image", "file")
_BOUNDARY = re.compile(r'boundary="?([^";,]+)"?', re.IGNORECASE)


def media_type_of(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _closing_boundary(content_type: str) -> bytes | None:
    match = _BOUNDARY.search(content_type)
    return None if match is None else b"--" + match[1].strip().encode("latin-1") + b"--"


async def read_image_body(request: Request, formats: tuple[str, ...], max_body_bytes: int) -> bytes:
    """The image bytes: the raw body, or the one file field of a multipart form; 400/415 otherwise."""
    content_type = request.headers.get("content-type", "")
    media_type = media_type_of(content_type)
    accepted = ", ".join(f"image/{fmt}" for fmt in formats)
    if media_type == "multipart/form-data":
        return await _read_multipart(request, content_type, formats, max_body_bytes)
    if FORMAT_BY_MEDIA_TYPE.get(media_type) not in formats:
        raise UnsupportedMediaType(
            "unsupported_media_type",
            f"Content-Type must be one of {accepted} or multipart/form-data, got {quote(media_type or 'none')}",
        )
    return await request.body()


async def _read_multipart(request: Request, content_type: str, formats: tuple[str, ...], max_body_bytes: int) -> bytes:
    closing = _closing_boundary(content_type)
    if closing is None:
        raise BadRequest("invalid_multipart", "multipart/form-data needs a boundary parameter in Content-Type")
    body = await request.body()  # cached: the form parser below reads it from memory
    if closing not in body:
        raise BadRequest(
            "invalid_multipart", "multipart body ends without its closing boundary (truncated or malformed upload)"
        )
    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=max_body_bytes)
    except HTTPException as error:
        raise BadRequest("invalid_multipart", f"malformed multipart body: {error.detail}") from None
    try:
        found = [(name, form.get(name)) for name in IMAGE_FIELDS if isinstance(form.get(name), UploadFile)]
        if not found:
            raise BadRequest("missing_image", "multipart body needs one file field named 'image' (or 'file')")
        name, item = found[0]
        assert isinstance(item, UploadFile)
        part_type = media_type_of(item.content_type)
        if part_type not in ("", "application/octet-stream") and FORMAT_BY_MEDIA_TYPE.get(part_type) not in formats:
            accepted = ", ".join(f"image/{fmt}" for fmt in formats)
            raise UnsupportedMediaType(
                "unsupported_media_type", f"field {name!r} must be one of {accepted}, got {quote(part_type)}"
            )
        return await item.read()
    finally:
        await form.close()
