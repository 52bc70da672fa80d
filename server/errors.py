"""Service errors and their JSON shape: every error is ``{"error": {"code", "message"}}``.

The hierarchy, by HTTP status::

    ServiceError                 500 internal
    ├── BadRequest               400 malformed parameter, header or image bytes
    ├── PayloadTooLarge          413 body bytes or input pixels over the limit
    ├── UnsupportedMediaType     415 content type or image format not accepted
    ├── Unprocessable            422 well-formed but out of range (scale, output size, budget, quality)
    ├── TooManyRequests          429 this client has too many requests in flight
    ├── Unavailable              503 queue full, draining, not ready, deadline unreachable (+ Retry-After)
    ├── GatewayTimeout           504 the request timed out before its tiles finished
    └── ClientClosedRequest      499 the client disconnected first (nginx's code; nobody reads the answer)

Handlers installed by :func:`install_error_handlers` also map FastAPI's validation errors (a query
value of the wrong type) to 400, unknown routes and methods to the same JSON shape, and anything
unexpected to a logged 500 that names the request id but leaks no internals.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


class TooManyRequests(ServiceError):
    status = 429


class Unavailable(ServiceError):
    status = 503


class GatewayTimeout(ServiceError):
    status = 504


class ClientClosedRequest(ServiceError):
    status = 499


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(error_body(error.code, error.message), status_code=error.status, headers=error.headers())


def _describe_validation(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()) if part not in ("query", "header", "body"))
        value = item.get("input")
        parts.append(f"{location or 'request'}: {item.get('msg', 'invalid')} (got {value!r})")
    return "; ".join(parts) or "invalid request"


async def _service_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    return error_response(error)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return error_response(BadRequest("invalid_parameter", _describe_validation(error)))


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
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
