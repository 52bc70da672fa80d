"""HTTP routes, one router per module; :data:`api_router` includes them all."""

from fastapi import APIRouter

from server.routes import health, metrics, model, ui, upscale

api_router = APIRouter()
api_router.include_router(upscale.router)
api_router.include_router(model.router)
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(ui.router)

__all__ = ["api_router"]
