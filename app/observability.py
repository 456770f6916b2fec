"""Prometheus metrics of the API process, served by ``GET /metrics``.

Every metric lives in ``REGISTRY``, not in prometheus_client's global default registry,
so building several apps in one process (as the tests do) never registers a metric
twice. Other modules add their own metrics with ``registry=REGISTRY``, or register a
collector that computes values at scrape time with ``register_collector``.
"""

from __future__ import annotations

import time
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_TYPE_LATEST",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_SECONDS",
    "MODEL_SWAPS",
    "REGISTRY",
    "SEQUENCES_GENERATED",
    "SEQUENCES_KEPT",
    "SERVING_MODEL_VERSION",
    "MetricsMiddleware",
    "register_collector",
    "render_metrics",
]

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "rsir_http_requests",
    "HTTP requests handled, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_SECONDS = Histogram(
    "rsir_http_request_duration_seconds",
    "Time from receiving a request to sending the last byte of its response, in seconds.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
SEQUENCES_GENERATED = Counter(
    "rsir_sequences_generated",
    "Synthetic sequences started by inference requests, by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
SEQUENCES_KEPT = Counter(
    "rsir_sequences_kept",
    "Synthetic sequences returned to callers after filtering, by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
SERVING_MODEL_VERSION = Gauge(
    "rsir_serving_model_version",
    "Registry version of the champion model this process serves; 0 while none is loaded.",
    registry=REGISTRY,
)
MODEL_SWAPS = Counter(
    "rsir_model_swaps",
    "Attempts to swap the served champion, by outcome (swapped or rejected).",
    ["outcome"],
    registry=REGISTRY,
)

# Label of requests that match no route, so unknown paths cannot grow the label set.
UNMATCHED_ROUTE = "unmatched"


def register_collector(collector: Collector) -> None:
    """Add a collector whose ``collect()`` computes metric families at scrape time."""
    REGISTRY.register(collector)


def render_metrics() -> bytes:
    """Return every metric in the Prometheus text format."""
    return generate_latest(REGISTRY)


def _route_template(scope: Scope) -> str:
    """Return the path template of the route that handled ``scope``, such as ``/models/{version}``."""
    return getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE


class MetricsMiddleware:
    """Count every HTTP request and time it, labelled by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500  # an exception that escapes every handler ends as a 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            labels = (scope["method"], _route_template(scope), str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_REQUEST_SECONDS.labels(*labels).observe(time.perf_counter() - started)
