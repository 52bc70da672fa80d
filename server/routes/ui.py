"""``GET /``: the try-it page, three static files shipped in ``server/static`` (no templating, no build step).

The page is a client of the public API only (``POST /upscale``, ``GET /v1/model``, ``GET /metrics``);
this module just hands out its files. A strict Content-Security-Policy keeps it honest: scripts,
styles and requests may come from this origin alone, so the page cannot lean on a CDN or an external
font and works offline. Left out of the OpenAPI document, which describes the API, not the page.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Response
from starlette.exceptions import HTTPException

router = APIRouter(include_in_schema=False)

#: Every file the page is made of, with its media type; nothing else under ``static/`` is served.
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
}

#: ``blob:`` for the images the page makes from API answers (shown, downloaded, read back). Styles set from
#: script are allowed by CSP (only ``style`` attributes in markup would need 'unsafe-inline'; the page has none).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@cache
def read_asset(name: str) -> bytes:
    """The bytes of one page file from the installed package (read once per process)."""
    return resources.files("server").joinpath("static", name).read_bytes()


def asset_response(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(404, f"no page file {name[:100]!r}; the page is {', '.join(sorted(ASSETS))}")
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        # Small files: revalidate each load so an upgraded server never pairs a new page with an old script.
        "Cache-Control": "no-cache",
    }
    return Response(read_asset(name), media_type=ASSETS[name], headers=headers)


@router.get("/")
async def index() -> Response:
    return asset_response("index.html")


@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    return asset_response(name)
