"""The FastAPI application factory, its start-up and shutdown, and ``serve`` for ``rsir serve``.

Start-up connects to Redis, opens the model registry and loads the ``champion`` alias.
Neither failure stops the process. /healthz responds, and /readyz returns 503 with the
reason until Redis responds to PING and a model is loaded. With an empty registry and
``RSIR_BOOTSTRAP_CHAMPION`` true, a first champion is trained in a background thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit

import anyio
import redis
import torch
from fastapi import FastAPI

from rsir_engine.device import resolve_device
from rsir_engine.errors import RoundCancelled, RSIRError
from rsir_engine.registry import ModelRegistry

from app.api.errors import install_exception_handlers
from app.api.middleware import BodySizeLimitMiddleware
from app.api.router import api_router
from app.core.config import Settings, get_settings
from app.events import publish_champion_changed
from app.observability import MetricsMiddleware
from app.serving import CHAMPION_ALIAS, ChampionListener, ModelHolder

__all__ = ["create_app", "serve"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Recursive Self-Improving Recommendation: a trained sequential recommender (SASRec) writes
synthetic user sequences, and a fidelity check keeps a step only while the user's own
unused real items still rank within the model's top `tau`. The survivors become
pseudo-users that enrich sparse interaction data.

Item ids are your raw ids (integers or strings), such as MovieLens movie ids.
Errors have the body `{"detail": {"message": ...}}`; request validation errors list the
invalid fields.
"""


def _package_version() -> str:
    try:
        return version("rsir")
    except PackageNotFoundError:
        return "0.0.0"


def redis_location(url: str) -> str:
    """Return ``host:port/db`` of a Redis URL, without the credentials it may contain."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def _connect_redis(settings: Settings) -> tuple[redis.Redis, str | None]:
    """Create the Redis client and PING it; return the client and the error, if any."""
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=settings.redis_timeout_s, socket_timeout=settings.redis_timeout_s
    )
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        return client, str(exc)
    return client, None


def _load_champion(holder: ModelHolder) -> bool:
    """Serve the registry's champion; return False when there is none."""
    try:
        champion = holder.registry.aliases().get(CHAMPION_ALIAS)
    except RSIRError as exc:
        holder.set_not_ready(f"cannot read the champion alias: {exc}")
        logger.error("cannot read the champion alias from registry %s: %s", holder.registry.root, exc)
        return True
    if champion is None:
        return False
    try:
        holder.swap_to(champion)
    except RSIRError as exc:
        holder.set_not_ready(f"champion model version {champion} cannot be loaded: {exc}")
    return True


def bootstrap_champion(settings: Settings, holder: ModelHolder, client: redis.Redis, stop: threading.Event) -> None:
    """Train a first champion on ``settings.bootstrap_dataset``, point the alias at it and serve it."""
    from rsir_engine.datasets import open_dataset
    from rsir_engine.rounds import RoundConfig, run_rounds
    from rsir_engine.training import TrainConfig

    name = settings.bootstrap_dataset
    registry = holder.registry
    run_id = f"bootstrap-{name}"
    try:
        # A restart after a publish that never got its alias reuses that version.
        existing = registry.find_by_publish_key(f"{run_id}:round0")
        if existing is not None:
            model_version = existing.version
            logger.info("bootstrap: reusing model version %d published by an earlier bootstrap on %s", model_version, name)
        else:
            dataset = open_dataset(name, settings.data_dir)
            config = RoundConfig(rounds=0, train=TrainConfig(max_epochs=settings.bootstrap_max_epochs), device=str(holder.device))
            result = run_rounds(dataset, config, registry=registry, run_id=run_id, should_stop=stop.is_set)
            model_version = result.rounds[0].version
        registry.set_alias(CHAMPION_ALIAS, model_version, reason="bootstrap", actor="rsir serve")
        holder.swap_to(model_version)
    except RoundCancelled:
        logger.info("bootstrap: training on %s was cancelled because the server is shutting down", name)
        return
    except Exception as exc:
        logger.exception("bootstrap: training a first champion on %s failed", name)
        holder.set_not_ready(
            f"bootstrapping a champion on {name} failed: {exc}; publish a model and point the champion alias at it"
        )
        return

    logger.info("bootstrap: model version %d trained on %s is now the champion", model_version, name)
    try:
        publish_champion_changed(client, model_version)
    except redis.exceptions.RedisError as exc:
        logger.warning("bootstrap: could not announce model version %d on Redis: %s", model_version, exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Connect Redis, load the champion (or start bootstrapping it) and listen for swaps; undo on shutdown."""
    settings: Settings = app.state.settings
    state = app.state
    state.redis_location = redis_location(settings.redis_url)

    client, redis_error = await anyio.to_thread.run_sync(_connect_redis, settings)
    if redis_error is not None:
        logger.warning(
            "Redis unreachable at %s (%s); the API starts anyway, /readyz returns 503 until Redis responds",
            state.redis_location,
            redis_error,
        )
    else:
        logger.info("connected to Redis at %s", state.redis_location)

    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
        logger.info("torch uses %d CPU thread(s) (RSIR_TORCH_THREADS)", settings.torch_threads)
    registry = ModelRegistry(settings.checkpoint_dir)
    holder = ModelHolder(registry, resolve_device(settings.device), cache_size=settings.model_cache_size)
    stop = threading.Event()
    bootstrap: threading.Thread | None = None
    if not await anyio.to_thread.run_sync(_load_champion, holder):
        if settings.bootstrap_champion:
            holder.set_not_ready(f"model not loaded yet: bootstrapping champion on {settings.bootstrap_dataset}")
            logger.warning(
                "registry %s has no champion: training one on %s in the background (RSIR_BOOTSTRAP_CHAMPION=true); "
                "/readyz reports 503 until it finishes",
                registry.root,
                settings.bootstrap_dataset,
            )
            bootstrap = threading.Thread(
                target=bootstrap_champion, args=(settings, holder, client, stop), name="rsir-bootstrap", daemon=True
            )
            bootstrap.start()
        else:
            holder.set_not_ready(
                f"registry {registry.root} has no champion alias; publish a model and promote it "
                "(POST /models/{version}/promote or `rsir run --promote`), or set RSIR_BOOTSTRAP_CHAMPION=true"
            )
            logger.warning("registry %s has no champion, so inference endpoints return 503", registry.root)

    listener = ChampionListener(client, holder)
    listener.start()
    state.redis = client
    state.registry = registry
    state.holder = holder
    state.listener = listener
    state.bootstrap_thread = bootstrap
    try:
        yield
    finally:
        stop.set()
        await anyio.to_thread.run_sync(listener.stop)
        if bootstrap is not None and bootstrap.is_alive():
            # Training stops at its next safe point (an epoch end); the daemon thread is
            # not waited for longer, so shutdown stays quick.
            await anyio.to_thread.run_sync(bootstrap.join, 5.0)
        client.close()
        logger.info("API shut down")


def _use_docstring_summaries(app: FastAPI) -> None:
    """Make each route's first docstring line its OpenAPI summary, and the rest its description.

    FastAPI's own summary is the function name in title case, which gives a reader less than the docstring.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                summary, _, rest = (operation.get("description") or "").strip().partition("\n")
                if not summary:
                    continue
                operation["summary"] = summary.strip()
                if rest.strip():
                    operation["description"] = rest.strip()
                else:
                    operation.pop("description")
        return schema

    app.openapi = openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application: routes, error mapping, body limit and metrics middleware."""
    settings = settings or get_settings()
    app = FastAPI(
        title="RSIR",
        version=_package_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_exception_handlers(app)
    app.include_router(api_router)
    _use_docstring_summaries(app)
    # The last middleware added runs first, so metrics also count 413 rejections.
    app.add_middleware(
        BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes
    )
    app.add_middleware(MetricsMiddleware)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the API with uvicorn, building the app from the RSIR_* environment."""
    import uvicorn

    # Entry points own logging handlers; basicConfig does nothing when the CLI already set them.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.info("starting the RSIR API on http://%s:%d (docs at /docs)", host, port)
    uvicorn.run("app.main:create_app", factory=True, host=host, port=port)
