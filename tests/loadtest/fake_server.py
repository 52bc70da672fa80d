"""A stand-in for ``anysr serve`` with the same HTTP contract and deterministic answers, for loadtest tests.

Routes: ``POST /upscale`` (raw image body, ``scale``/``format`` query, ``X-AnySR-Budget: width=W`` and
``X-AnySR-Deadline-Ms`` headers), ``GET /metrics`` (the server's metric names on a private registry),
``/readyz`` and ``/v1/model``. The width depends only on the scale and the policy, a
deadline under ``REJECT_BELOW_MS`` is refused with 503, and every upscale sleeps ``delay_s``, so
tests can assert exact counts. Run as a script it takes ``anysr serve``'s flags (unknown ones ignored).
Plain Starlette (FastAPI's base) keeps the subprocess start-up cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import io

import uvicorn
from PIL import Image
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REJECT_BELOW_MS = 100.0


def width_for(scale: float, policy: str) -> tuple[float, str]:
    if policy.startswith("fixed:"):
        return float(policy.split(":")[1]), "fixed"
    if scale < 2.0:
        return 1.0, "scale_group"
    return (0.7, "scale_group") if scale < 3.0 else (0.5, "scale_group")


def make_fake_app(policy: str = "adaptive", delay_s: float = 0.0) -> Starlette:
    registry = CollectorRegistry()
    queue = Histogram("anysr_queue_wait_seconds", "queue", ["width"], registry=registry)
    compute = Histogram("anysr_compute_seconds", "compute", ["width"], registry=registry)
    duration = Histogram("anysr_request_duration_seconds", "duration", ["width"], registry=registry)
    batch = Histogram("anysr_batch_size_tiles", "batch", registry=registry)
    requests = Counter("anysr_requests_total", "requests", ["status"], registry=registry)
    selected = Counter("anysr_width_selected_total", "selected", ["width", "reason"], registry=registry)
    flops_total = Counter("anysr_flops_total", "flops", ["width"], registry=registry)

    async def upscale(request: Request) -> Response:
        scale = float(request.query_params["scale"])
        body = await request.body()
        with Image.open(io.BytesIO(body)) as image:
            width_px, height_px = image.size
        deadline = request.headers.get("x-anysr-deadline-ms")
        if deadline is not None and float(deadline) < REJECT_BELOW_MS:
            requests.labels(status="503").inc()
            error = {"error": {"code": "deadline_unreachable", "message": f"deadline {deadline} ms cannot be met"}}
            return JSONResponse(error, status_code=503, headers={"Retry-After": "1"})
        width, reason = width_for(scale, policy)
        budget = request.headers.get("x-anysr-budget", "")
        if budget.startswith("width="):
            width, reason = float(budget.split("=")[1]), "forced"
        await asyncio.sleep(delay_s)
        out_h, out_w = round(height_px * scale), round(width_px * scale)
        flops = int(out_h * out_w * 1000 * width * width)
        label = f"{width:.1f}"
        queue.labels(width=label).observe(0.001)
        compute.labels(width=label).observe(delay_s)
        duration.labels(width=label).observe(delay_s + 0.001)
        batch.observe(1)
        requests.labels(status="200").inc()
        selected.labels(width=label, reason=reason).inc()
        flops_total.labels(width=label).inc(flops)
        encoded = io.BytesIO()
        Image.new("RGB", (out_w, out_h)).save(encoded, format="PNG", compress_level=1)
        headers = {
            "X-AnySR-Width": label,
            "X-AnySR-FLOPs": str(flops),
            "X-AnySR-Reason": reason,
            "Server-Timing": f"queue;dur=1.000, compute;dur={delay_s * 1e3:.3f}, total;dur={delay_s * 1e3 + 1:.3f}",
        }
        return Response(encoded.getvalue(), media_type="image/png", headers=headers)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    async def readyz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    async def model(_: Request) -> JSONResponse:
        mode, _sep, fixed = policy.partition(":")
        return JSONResponse(
            {
                "untrained": True,
                "device": "cpu",
                "precision": "fp32",
                "sha256": None,
                "policy": {"mode": mode, "fixed_width": float(fixed) if fixed else None},
            }
        )

    return Starlette(
        routes=[
            Route("/upscale", upscale, methods=["POST"]),
            Route("/metrics", metrics),
            Route("/readyz", readyz),
            Route("/v1/model", model),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--policy", default="adaptive")
    parser.add_argument("--delay-s", type=float, default=0.0)
    args, _ = parser.parse_known_args()
    app = make_fake_app(args.policy, args.delay_s)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", ws="none", lifespan="off")


if __name__ == "__main__":
    main()
