"""Who may call what: optional API keys, and which port serves the admin routes.

- **API keys** (``api_keys`` and/or ``api_keys_file``): when any is configured, every route but the
  documentation (``/docs``, ``/openapi.json``) and the try-it page's static files (``/`` and ``/ui/*``:
  they hold no data, and the page asks for the key before it calls the API) needs one in
  ``api_key_header`` (default ``X-API-Key``);
  401 ``missing_api_key`` / ``invalid_api_key`` otherwise. Keys are kept only as SHA-256 digests and
  compared in constant time (``hmac.compare_digest`` against every key, so the time does not depend on
  which key, or how much of one, matched). A request's key is known downstream by a short id (the first
  12 hex digits of its digest), for per-key limits and logs; the key itself is never logged.
- **Admin routes** (``/healthz``, ``/readyz``, ``/metrics``) are open by default (``public_admin``),
  as probes and scrapers rarely carry keys. With ``admin_port`` they are served on that port only,
  without a key, and the main port answers them 404.

A pure ASGI middleware, so it sees every request before routing (unknown paths included).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from server.errors import error_body
from server.middleware import ASGIApp, Message, Receive, Scope, Send, _header

ADMIN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
#: The try-it page: static files only, served without a key so a browser can load the form that asks for one.
PAGE_PATHS = frozenset({"/"})
PAGE_PREFIX = "/ui/"


def read_keys_file(path: Path) -> list[str]:
    """Keys from a file: one per line, blank lines and ``#`` comments ignored."""
    keys = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            keys.append(line)
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys, as digests."""

    digests: tuple[bytes, ...] = ()

    @classmethod
    def from_keys(cls, keys: Iterable[str]) -> ApiKeys:
        return cls(tuple(_digest(key) for key in dict.fromkeys(key.strip() for key in keys) if key))

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def identify(self, presented: str) -> str | None:
        """The id of the key ``presented`` matches, or None. Compares against every key, always."""
        digest = _digest(presented)
        found = None
        for known in self.digests:
            if hmac.compare_digest(digest, known) and found is None:
                found = known.hex()[:12]
        return found


@dataclass(frozen=True)
class AccessPolicy:
    keys: ApiKeys
    key_header: str = "x-api-key"
    public_admin: bool = True
    admin_port: int | None = None


class AccessMiddleware:
    """Route requests by port (admin routes) and check API keys; 404 / 401 as JSON."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy
        self._header = policy.key_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy
        path = scope["path"]
        admin = path in ADMIN_PATHS
        if policy.admin_port is not None:
            on_admin_port = (scope.get("server") or ("", None))[1] == policy.admin_port
            if admin != on_admin_port:
                where = f"port {policy.admin_port}" if admin else "the main port"
                await _answer(send, 404, "not_found", f"{path} is served on {where}")
                return
            if on_admin_port:
                await self.app(scope, receive, send)
                return
        public = path in DOC_PATHS or path in PAGE_PATHS or path.startswith(PAGE_PREFIX)
        needs_key = policy.keys.enabled and not public and not (admin and policy.public_admin)
        if needs_key and scope["method"] != "OPTIONS":
            presented = _header(scope, self._header)
            if presented is None:
                await _answer(send, 401, "missing_api_key", f"send an API key in the {policy.key_header} header")
                return
            key_id = policy.keys.identify(presented)
            if key_id is None:
                await _answer(send, 401, "invalid_api_key", f"the {policy.key_header} header holds no valid API key")
                return
            scope.setdefault("state", {})["api_key_id"] = key_id
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
