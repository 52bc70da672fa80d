"""Connection-level limits uvicorn does not have: a header timeout and a cap on open connections.

:func:`guarded_protocol` returns a subclass of uvicorn's h11 protocol (the one it picks when
httptools is not installed) with two additions:

- **Header timeout.** From the moment a connection opens, and again each time a response completes,
  the client has ``header_timeout_s`` to send a complete request head. A slow-loris client that trickles
  header bytes (which resets uvicorn's keep-alive timer) is closed at the timeout.
- **Connection cap.** A connection that would be the ``max_connections + 1``-th open one is answered
  with the documented JSON 503 (``too_many_connections``) and closed at once.

The body has its own timeout on the ASGI side (``UpscaleGuardMiddleware``).
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.errors import error_body

logger = logging.getLogger("anysr.server.connections")


def _refusal() -> bytes:
    body = json.dumps(
        error_body("too_many_connections", "server has too many open connections; retry shortly")
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header timeout and a connection cap (pass as ``Config(http=...)``)."""

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                logger.warning("refused a connection: %d open, at most %d", len(self.connections) - 1, max_connections)
                transport.write(_refusal())
                transport.close()
                return
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_overdue)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_overdue(self) -> None:
            self._header_timer = None
            # IDLE: no complete request head since the connection opened or the last response.
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                logger.info("closed a connection that sent no complete request head in %.1f s", header_timeout_s)
                self.transport.close()

    return GuardedH11Protocol
