"""The API router: every resource's routes, mounted by ``create_app``."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import augment, datasets, fidelity, generate, health, metrics, models, recommend, rounds

__all__ = ["api_router"]

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(augment.router)
api_router.include_router(generate.router)
api_router.include_router(fidelity.router)
api_router.include_router(recommend.router)
api_router.include_router(models.router)
api_router.include_router(rounds.router)
api_router.include_router(datasets.router)
