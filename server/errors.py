"""Service errors and their JSON shape: every error is ``{"error": {"code", "message"}}``.

The hierarchy, by HTTP status::

    ServiceError                 500 internal
    ├── BadRequest               400 malformed parameter, header or image bytes
    ├── PayloadTooLarge          413 body bytes or input pixels over the limit
    ├── UnsupportedMediaType     415 content type or image format not accepted
    ├── Unprocessable            422 well-formed but out of range (scale, output size, budget, quality)
    ├── Unauthorized             401 missing or unknown API key
    ├── NotAcceptable            406 Accept names no format this server writes
    ├── RequestTimeout           408 the body did not arrive within the body timeout
    ├── TooManyRequests          429 this client (or API key) has too many requests in flight
    ├── Unavailable              503 queue full, draining, not ready, deadline unreachable (+ Retry-After)
    ├── GatewayTimeout           504 the request timed out before its tiles finished
    └── ClientClosedRequest      499 the client disconnected first (nginx's code; nobody reads the answer)

Handlers installed by :func:`install_error_handlers` also map FastAPI's validation errors (a query
value of the wrong type) to 400, a client that disconnects mid-upload to 499 (one INFO line),
unknown routes and methods to the same JSON shape, and anything unexpected to a logged 500 that
names the request id but leaks no internals. Messages quote a client's values cut to
:data:`QUOTE_LIMIT` characters and never carry an object's repr.
"""

from __future__ import annotations

import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

logger = logging.getLogger("anysr.server.errors")


class ServiceError(Exception):
    """An error with an HTTP status, a stable machine-readable ``code`` and a human ``message``."""

    status = 500

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class BadRequest(ServiceError):
    status = 400


class PayloadTooLarge(ServiceError):
    status = 413


class UnsupportedMediaType(ServiceError):
    status = 415


class Unprocessable(ServiceError):
    status = 422


class Unauthorized(ServiceError):
    status = 401


class NotAcceptable(ServiceError):
    status = 406


class RequestTimeout(ServiceError):
    status = 408

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}  # the rest of the body may still be on its way: do not reuse the connection


class TooManyRequests(ServiceError):
    status = 429


class Unavailable(ServiceError):
    status = 503


class GatewayTimeout(ServiceError):
    status = 504


class ClientClosedRequest(ServiceError):
    status = 499


#: Longest stretch of a client's value quoted back in an error message.
QUOTE_LIMIT = 100
#: An object's default repr (``<_io.BytesIO object at 0x7f...>``): a library's message may carry one.
_OBJECT_REPR = re.compile(r"<[^<>]{0,200}? at 0x[0-9a-fA-F]+>")


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """A client's value for an error message: text in quotes, cut to ``limit`` characters (saying how long
    it was), numbers as written; anything else by its type only, never its repr."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        text = str(value)
        return text if len(text) <= limit else f"a number of {len(text)} digits"
    if not isinstance(value, str):
        return f"a value of type {type(value).__name__}"
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def clean_message(message: str) -> str:
    """Strip object reprs from a message (e.g. one Pillow wrote) and bound its length."""
    message = _OBJECT_REPR.sub("the input", message)
    return message if len(message) <= 4 * QUOTE_LIMIT else message[: 4 * QUOTE_LIMIT] + "..."


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": clean_message(message)}}


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(error_body(error.code, error.message), status_code=error.status, headers=error.headers())


def _describe_validation(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()) if part not in ("query", "header", "body"))
        value = item.get("input")
        parts.append(f"{location or 'request'}: {item.get('msg', 'invalid')} (got {quote(value)})")
    return "; ".join(parts) or "invalid request"


async def _service_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    return error_response(error)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return error_response(BadRequest("invalid_parameter", _describe_validation(error)))


async def _client_disconnected(request: Request, _: Exception) -> JSONResponse:
    """The client went away while its body was being read: one INFO line, counted as 499, no traceback."""
    logger.info("client disconnected during upload (request %s)", getattr(request.state, "request_id", ""))
    return error_response(ClientClosedRequest("client_closed", "client disconnected before sending its body"))


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return JSONResponse(
        error_body(codes.get(error.status_code, "http_error"), str(error.detail)),
        status_code=error.status_code,
        headers=error.headers,
    )


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", "")
    logger.error("unhandled error in request %s", request_id, exc_info=error)
    return JSONResponse(
        error_body("internal", f"internal error; see the server log for request {request_id}"), status_code=500
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app`` (called by ``create_app``)."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
