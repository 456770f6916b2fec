"""Liveness and readiness probes."""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.schemas.common import HealthPublic, ReadinessPublic

router = APIRouter(tags=["health"])

logger = logging.getLogger(__name__)


@router.get("/healthz", response_model=HealthPublic)
def healthz() -> HealthPublic:
    """Report that the process is alive, always with status 200."""
    return HealthPublic()


@router.get(
    "/readyz",
    response_model=ReadinessPublic,
    responses={503: {"model": ReadinessPublic, "description": "Not ready: Redis unreachable or no model loaded."}},
)
def readyz(request: Request) -> JSONResponse:
    """Return 200 when Redis responds to PING and a model is loaded, else 503 with the reasons."""
    state = request.app.state
    reasons: list[str] = []

    client = getattr(state, "redis", None)
    redis_ok = False
    if client is None:
        reasons.append("Redis client not created yet: the application is still starting")
    else:
        try:
            redis_ok = bool(client.ping())
        except redis.exceptions.RedisError as exc:
            reasons.append(f"Redis unreachable at {state.redis_location}: {exc}")

    holder = getattr(state, "holder", None)
    current = holder.current if holder is not None else None
    if current is None:
        reasons.append(holder.not_ready_reason if holder is not None else "model not loaded yet: the application is still starting")

    body = ReadinessPublic(ready=not reasons, redis=redis_ok, model_version=current.version if current else None, reasons=reasons)
    return JSONResponse(status_code=200 if body.ready else 503, content=body.model_dump())
