"""``/healthz`` (the process is alive) and ``/readyz`` (warmed up and not draining)."""

from __future__ import annotations

from fastapi import APIRouter

from server.deps import LifecycleDep
from server.errors import Unavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", summary="Readiness: 503 while warming up or draining")
async def readyz(lifecycle: LifecycleDep) -> dict[str, str]:
    if lifecycle.draining:
        raise Unavailable("draining", "server is shutting down", retry_after_s=1)
    if not lifecycle.ready:
        raise Unavailable("not_ready", "server is warming up", retry_after_s=1)
    return {"status": "ready"}
