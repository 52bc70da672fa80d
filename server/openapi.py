"""The OpenAPI document, made to say exactly what the server does (schemathesis checks it in CI).

FastAPI's generated document is the starting point; this module then states, per route, what FastAPI
cannot know: the request body of ``POST /upscale`` (raw image media types, or multipart with ``image``
or ``file``), every status each route answers with the real error shape ``{"error": {"code",
"message"}}`` (never FastAPI's ``{"detail": ...}``), and the bounds of every parameter and header,
taken from the running settings (scale range, output formats, widths), so the document and the
validation in the code cannot drift apart. Numbers in headers are documented as numbers with the
same bounds the parsers in ``server/headers.py`` enforce.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from server.codec import MEDIA_TYPES
from server.headers import BUDGET_PATTERN, MAX_DEADLINE_MS, MAX_HEADER_LENGTH
from server.metrics import width_label
from server.routes.model import SIZE_PATTERN
from server.settings import Settings

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code (docs/serving.md)."},
                "message": {"type": "string", "description": "What went wrong, naming the value and the limit."},
            },
        }
    },
}

UPSCALE_ERRORS = {
    "400": "A malformed parameter, header, multipart body or image (also a repeated parameter or header).",
    "406": "Accept names no format this server writes.",
    "408": "The request body did not arrive within body_timeout_s.",
    "413": "Body over max_body_bytes, or image over max_input_pixels.",
    "415": "Content-Type, or the image's own format, not accepted.",
    "422": "Well-formed but out of range: scale, output size, quality, format, budget, ICC profile, or a request "
    "predicted to take longer than its deadline or the request timeout even on an idle server.",
    "429": "This client address or API key already has its most requests in flight.",
    "499": "The client disconnected first (logged and counted; nobody receives it).",
    "500": "A bug; the message names the request id.",
    "503": "Queue full, deadline unreachable under the current load, draining, or warming up.",
    "504": "The tiles did not finish within the deadline or request timeout.",
}

_BINARY = {"type": "string", "format": "binary"}


def _error_responses(statuses: dict[str, str]) -> dict[str, Any]:
    responses = {}
    for status, description in statuses.items():
        response: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        if status in ("429", "503"):
            response["headers"] = {
                "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
            }
        responses[status] = response
    return responses


def _number(minimum: float, maximum: float, description: str, exclusive: bool = True) -> dict[str, Any]:
    bound = "exclusiveMinimum" if exclusive else "minimum"
    return {"type": "number", bound: minimum, "maximum": maximum, "description": description}


def _parameter(name: str, where: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": where, "required": False, "schema": schema, "description": schema["description"]}


def _upscale(settings: Settings, widths: tuple[float, ...] | None) -> dict[str, Any]:
    low, high = settings.min_scale, settings.max_scale
    named = ", ".join(width_label(width) for width in widths) if widths else "the model's widths, see GET /v1/model"
    parameters = [
        _parameter("scale", "query", _number(low, high, f"Scale for both axes, in ({low}, {high}].")),
        _parameter("scale_h", "query", _number(low, high, "Vertical scale (overrides scale for the height).")),
        _parameter("scale_w", "query", _number(low, high, "Horizontal scale (overrides scale for the width).")),
        _parameter(
            "format",
            "query",
            {"type": "string", "enum": list(settings.output_formats), "description": "Output format (absent: Accept)."},
        ),
        _parameter(
            "quality", "query", {"type": "integer", "minimum": 1, "maximum": 100, "description": "JPEG/WebP quality."}
        ),
        _parameter(
            "keep_exif",
            "query",
            {"type": "boolean", "description": "Keep the input's EXIF block (orientation reset); default: strip."},
        ),
        _parameter(
            "X-AnySR-Budget",
            "header",
            {
                "type": "string",
                "pattern": BUDGET_PATTERN,
                "maxLength": MAX_HEADER_LENGTH,
                "description": f"width=W (one of {named}) and/or gflops=G (G > 0), comma-separated.",
            },
        ),
        _parameter(
            "X-AnySR-Deadline-Ms",
            "header",
            _number(0, MAX_DEADLINE_MS, "Answer within this many milliseconds, or be refused at once."),
        ),
    ]
    answer = {"$ref": "#/components/schemas/UpscaleAnswer"}
    image_headers = {
        "X-AnySR-Width": {"description": "Subnet width that ran.", "schema": {"type": "string"}},
        "X-AnySR-FLOPs": {"description": "FLOPs the model ran.", "schema": {"type": "integer"}},
        "X-AnySR-Reason": {"description": "Why that width.", "schema": {"type": "string"}},
        "X-AnySR-Tiles": {"description": "Tiles the image was cut into.", "schema": {"type": "integer"}},
        "Server-Timing": {"description": "queue, decode, compute, encode, total (ms).", "schema": {"type": "string"}},
    }
    content = {MEDIA_TYPES[fmt]: {"schema": _BINARY} for fmt in settings.output_formats}
    content["application/json"] = {"schema": answer}
    request_content: dict[str, Any] = {MEDIA_TYPES[fmt]: {"schema": _BINARY} for fmt in settings.input_formats}
    request_content["multipart/form-data"] = {
        "schema": {
            "type": "object",
            "properties": {"image": _BINARY, "file": _BINARY},
            "description": "One file field, named image (or file).",
        }
    }
    return {
        "parameters": parameters,
        "requestBody": {"required": True, "content": request_content},
        "responses": {
            "200": {
                "description": "The upscaled image (format from `format`, else from Accept), or JSON with it "
                "base64-encoded when Accept prefers application/json.",
                "headers": image_headers,
                "content": content,
            },
            **_error_responses(UPSCALE_ERRORS),
        },
    }


UPSCALE_ANSWER: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "width", "reason", "flops", "output_size", "format", "image_base64"],
    "properties": {
        "request_id": {"type": "string"},
        "width": {"type": "number"},
        "reason": {"type": "string"},
        "flops": {"type": "integer"},
        "flops_whole_image": {"type": "integer"},
        "load_level": {"type": "integer"},
        "scale": {"type": "array", "items": {"type": "number"}},
        "input_size": {"type": "array", "items": {"type": "integer"}},
        "output_size": {"type": "array", "items": {"type": "integer"}},
        "tiles": {"type": "integer"},
        "format": {"type": "string"},
        "media_type": {"type": "string"},
        "timing_ms": {"type": "object", "additionalProperties": {"type": "number"}},
        "image_base64": {"type": "string"},
    },
}


def _model(settings: Settings) -> dict[str, Any]:
    low, high = settings.min_scale, settings.max_scale
    size = {
        "type": "string",
        "pattern": SIZE_PATTERN,
        "description": "Input size HxW (height x width) for the FLOPs table, each side 1 to 9,999,999.",
    }
    return {
        "parameters": [
            _parameter("size", "query", size),
            _parameter("scale", "query", _number(low, high, "Scale for the FLOPs table.")),
            _parameter("scale_h", "query", _number(low, high, "Vertical scale (overrides scale).")),
            _parameter("scale_w", "query", _number(low, high, "Horizontal scale (overrides scale).")),
        ],
        "responses": {
            "200": {
                "description": "The model and how it is served.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **_error_responses(
                {
                    "400": "A malformed size or scale (or a repeated parameter).",
                    "422": "A scale out of range, or an output over max_output_pixels.",
                    "503": "Warming up.",
                }
            ),
        },
    }


def _simple(description: str, media_type: str, errors: dict[str, str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"} if media_type.startswith("text/") else {"type": "object"}
    return {
        "parameters": [],
        "responses": {
            "200": {"description": description, "content": {media_type: {"schema": schema}}},
            **_error_responses(errors),
        },
    }


def served_widths(app: FastAPI, settings: Settings) -> tuple[float, ...] | None:
    """The widths a forced width may name: the settings' if given, else the loaded model's (None before it is)."""
    if settings.widths is not None:
        return settings.widths
    service = getattr(app.state, "service", None)
    return service.policy.widths if service is not None else None


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The document for ``app``, built once and cached on it (``app.openapi = lambda: ...``)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    operations = {
        ("/upscale", "post"): _upscale(settings, served_widths(app, settings)),
        ("/v1/model", "get"): _model(settings),
        ("/healthz", "get"): _simple("Alive.", "application/json", {}),
        ("/readyz", "get"): _simple("Ready.", "application/json", {"503": "Warming up or draining."}),
        ("/metrics", "get"): _simple("Prometheus text format.", "text/plain", {}),
    }
    if settings.admin_port is not None:  # served on the admin port only: not part of this API
        for path in ("/healthz", "/readyz", "/metrics"):
            document["paths"].pop(path, None)
            operations.pop((path, "get"))
    for (path, method), replacement in operations.items():
        operation = document["paths"][path][method]
        operation.update(replacement)
        if path == "/upscale":
            operation["description"] = (
                "Body: the raw image, or multipart/form-data with one file field `image` (or `file`). The answer's "
                "format is `format` or else negotiated from Accept (image/png, image/jpeg, image/webp, "
                "application/json for JSON with the image base64-encoded; 406 if none fits)."
            )
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components["Error"] = ERROR_SCHEMA
    components["UpscaleAnswer"] = UPSCALE_ANSWER
    if settings.api_keys or settings.api_keys_file:
        document["components"]["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": settings.api_key_header}
        }
        protected = [("/upscale", "post"), ("/v1/model", "get")]
        if not settings.public_admin and settings.admin_port is None:
            protected += [("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get")]
        for path, method in protected:
            operation = document["paths"][path][method]
            operation["security"] = [{"ApiKey": []}]
            operation["responses"].update(_error_responses({"401": "Missing or unknown API key."}))
    app.openapi_schema = document
    return document
