"""Dependencies shared by the routes: settings, registry, Redis, the served model, the API key, limits."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Annotated

import redis
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from rsir_engine.model_io import LoadedModel
from rsir_engine.registry import ModelRegistry

from app.api.errors import ApiError, invalid_field
from app.core.config import Settings
from app.schemas.inference import UserHistory
from app.serving import ModelHolder, ModelNotReadyError

__all__ = [
    "API_KEY_HEADER",
    "ApiKeyDep",
    "ChampionDep",
    "HolderDep",
    "RedisDep",
    "RegistryDep",
    "SettingsDep",
    "check_items",
    "check_m",
    "check_users",
    "get_holder",
    "get_redis",
    "get_registry",
    "get_settings",
    "require_api_key",
]

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"

_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Required on requests that change state (promotion, starting or cancelling rounds) when the server sets RSIR_API_KEY.",
)


def _state(request: Request, name: str):
    value = getattr(request.app.state, name, None)
    if value is None:
        raise ModelNotReadyError("the application has not finished starting; retry in a moment")
    return value


def get_settings(request: Request) -> Settings:
    """Return the settings the app was created with."""
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    """Return the model registry opened at start-up."""
    return _state(request, "registry")


def get_holder(request: Request) -> ModelHolder:
    """Return the holder of the served champion."""
    return _state(request, "holder")


def get_redis(request: Request) -> redis.Redis:
    """Return the shared Redis client; commands on it raise ConnectionError (a 503) while Redis is down."""
    return _state(request, "redis")


def get_champion(holder: Annotated[ModelHolder, Depends(get_holder)]) -> LoadedModel:
    """Return the served champion, or raise a 503 while none is loaded."""
    return holder.get()


def require_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    api_key: Annotated[str | None, Security(_api_key_scheme)],
) -> None:
    """Raise a 401 unless the X-API-Key header matches RSIR_API_KEY, which is only required when set."""
    expected = settings.api_key
    if not expected:
        return
    if api_key is None:
        raise ApiError(401, f"missing {API_KEY_HEADER} header; this server requires an API key for this request")
    if not secrets.compare_digest(api_key.encode(), expected.encode()):
        logger.warning("rejected a request with a wrong %s header", API_KEY_HEADER)
        raise ApiError(401, f"wrong {API_KEY_HEADER} header; send the key configured in RSIR_API_KEY")


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
ChampionDep = Annotated[LoadedModel, Depends(get_champion)]
ApiKeyDep = Depends(require_api_key)  # use as dependencies=[ApiKeyDep]


def check_users(users: Sequence[UserHistory], settings: Settings) -> None:
    """Raise a 422 when a request has too many users or a history has too many items."""
    if len(users) > settings.max_users_per_request:
        raise invalid_field(
            ("body", "users"),
            f"{len(users)} users are more than the limit of {settings.max_users_per_request} per request "
            "(RSIR_MAX_USERS_PER_REQUEST); split the request",
            len(users),
        )
    for index, user in enumerate(users):
        check_items(user.items, settings, ("body", "users", index, "items"))


def check_items(items: Sequence[object], settings: Settings, loc: Sequence[str | int]) -> None:
    """Raise a 422 when one item list is longer than RSIR_MAX_SEQUENCE_ITEMS."""
    if len(items) > settings.max_sequence_items:
        raise invalid_field(
            loc,
            f"{len(items)} items are more than the limit of {settings.max_sequence_items} per sequence "
            "(RSIR_MAX_SEQUENCE_ITEMS); send the most recent items only",
            len(items),
        )


def check_m(m: int, settings: Settings) -> None:
    """Raise a 422 when ``m`` is above RSIR_MAX_M."""
    if m > settings.max_m:
        raise invalid_field(
            ("body", "m"), f"m is {m}, above the limit of {settings.max_m} sequences per user (RSIR_MAX_M)", m
        )
