"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.observability import CONTENT_TYPE_LATEST, render_metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Metrics in the Prometheus text format."}},
)
def metrics() -> Response:
    """Return the process's metrics in the Prometheus text format."""
    return Response(content=render_metrics(), media_type=CONTENT_TYPE_LATEST)
