"""Two small ASGI middlewares: request ids on every response, and the upscale route's guard (body size,
body time, drain).

Pure ASGI (no ``BaseHTTPMiddleware``), so streaming and cancellation behave as without them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from server.errors import PayloadTooLarge, RequestTimeout, Unavailable, error_body
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
    """On one path: guard the body, and count every answer by status.

    - Size: a declared Content-Length over ``max_body_bytes`` is refused before reading (413); a chunked
      body is counted as it streams and refused once it passes the cap.
    - Time: the body must arrive within ``body_timeout_s`` of the headers (408 ``body_timeout``, and the
      connection is closed), so a client that stalls mid-upload cannot hold an in-flight slot.
    - Drain: once the drain deadline has passed (``drain_expired`` set), a body still arriving ends with
      the documented 503 ``draining`` instead of holding shutdown.

    Only reads of the body are guarded: once it is complete, the route listens on the same channel for
    a disconnect, which may take as long as the request does. Counting here sees every status,
    including the 400s FastAPI raises before the handler runs and the 500s of unexpected errors.
    """

    def __init__(
        self,
        app: ASGIApp,
        path: str,
        max_body_bytes: int,
        metrics: ServerMetrics,
        body_timeout_s: float = 30.0,
        drain_expired: asyncio.Event | None = None,
    ) -> None:
        self.app = app
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s
        self.drain_expired = drain_expired or asyncio.Event()

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
        complete = False
        deadline = time.monotonic() + self.body_timeout_s

        async def receive_guarded() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            message = await self._receive_by(receive, deadline)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise PayloadTooLarge("body_too_large", f"body exceeds the limit of {limit} bytes")
            return message

        try:
            await self.app(scope, receive_guarded, send_counted)
        finally:
            self.metrics.count_request(status)

    async def _receive_by(self, receive: Receive, deadline: float) -> Message:
        """One body message, unless the body timeout or the drain deadline comes first."""
        if self.drain_expired.is_set():
            raise Unavailable("draining", "server shut down before the request body arrived", retry_after_s=1)
        receiving = asyncio.ensure_future(receive())
        expiry = asyncio.ensure_future(self.drain_expired.wait())
        try:
            done, _ = await asyncio.wait(
                {receiving, expiry}, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            expiry.cancel()
        if receiving in done:
            return receiving.result()
        receiving.cancel()
        if expiry in done:
            raise Unavailable("draining", "server shut down before the request body arrived", retry_after_s=1)
        raise RequestTimeout(
            "body_timeout", f"the request body did not arrive within {self.body_timeout_s:g} s (body_timeout_s)"
        )

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
