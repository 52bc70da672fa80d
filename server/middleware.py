"""Two small ASGI middlewares: request ids on every response, and the upscale route's guard.

Pure ASGI (no ``BaseHTTPMiddleware``), so streaming and cancellation behave as without them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from server.errors import PayloadTooLarge, error_body
from server.headers import request_id_from
from server.metrics import ServerMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestIdMiddleware:
    """Give each HTTP request an id (the client's ``X-Request-ID`` if sane) in ``request.state`` and echo it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(_header(scope, b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


class UpscaleGuardMiddleware:
    """On one path: cap the body at ``max_body_bytes`` (413) and count every answer by status.

    A declared Content-Length over the cap is refused before reading; a chunked body is counted as
    it streams and refused once it passes the cap. Counting here sees every status, including the
    400s FastAPI raises before the handler runs and the 500s of unexpected errors.
    """

    def __init__(self, app: ASGIApp, path: str, max_body_bytes: int, metrics: ServerMetrics) -> None:
        self.app = app
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        status = 500
        limit = self.max_body_bytes

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send_counted, f"body of {declared} bytes exceeds the limit of {limit} bytes")
            self.metrics.count_request(status)
            return

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge("body_too_large", f"body exceeds the limit of {limit} bytes")
            return message

        try:
            await self.app(scope, receive_limited, send_counted)
        finally:
            self.metrics.count_request(status)

    @staticmethod
    async def _refuse(send: Send, message: str) -> None:
        body = json.dumps(error_body("body_too_large", message)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
