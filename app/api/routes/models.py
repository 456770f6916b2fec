"""Model registry routes: list versions, inspect one, promote one to champion, alias history."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Body, Path, Query

from rsir_engine.registry import ALIAS_PATTERN, ModelVersion

from app.api.deps import ApiKeyDep, HolderDep, RedisDep, RegistryDep
from app.api.errors import error_responses
from app.events import publish_champion_changed
from app.schemas.models import (
    AliasChangesPublic,
    ModelVersionDetail,
    ModelVersionsPublic,
    PromotionCreate,
    PromotionPublic,
)

router = APIRouter(prefix="/models", tags=["models"])

logger = logging.getLogger(__name__)

VersionPath = Annotated[
    str,
    Path(
        description="version number, or an alias such as champion",
        max_length=64,
        pattern=r"^([1-9][0-9]{0,17}|[a-z][a-z0-9_-]{0,63})$",
        examples=["1", "champion"],
    ),
]


def _version_ref(version: str) -> int | str:
    return int(version) if version.isdigit() else version


def _summary(entry: ModelVersion) -> dict[str, Any]:
    manifest = entry.manifest
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    return {
        "version": entry.version,
        "round": entry.round,
        "parent_version": entry.parent_version,
        "aliases": list(entry.aliases),
        "created_at": entry.created_at,
        "architecture": manifest.get("architecture"),
        "num_items": manifest.get("num_items"),
        "dataset": {key: dataset.get(key) for key in ("name", "fingerprint", "users", "interactions")},
        "run_id": manifest.get("run_id"),
        "metrics": entry.metrics,
    }


@router.get("", response_model=ModelVersionsPublic)
def list_models(registry: RegistryDep) -> ModelVersionsPublic:
    """List every published model version with its round, parent, metrics and aliases."""
    versions = registry.list_versions()
    return ModelVersionsPublic(data=[_summary(entry) for entry in versions], count=len(versions), aliases=registry.aliases())


@router.get("/aliases/history", response_model=AliasChangesPublic, responses=error_responses(422))
def alias_history(
    registry: RegistryDep,
    alias: Annotated[
        str | None,
        Query(max_length=64, pattern=f"^{ALIAS_PATTERN.pattern}$", description="only moves of this alias; all aliases when omitted"),
    ] = None,
) -> AliasChangesPublic:
    """List recorded alias moves, oldest first, so any earlier champion can be restored."""
    changes = registry.alias_history(alias)
    return AliasChangesPublic(data=[change.to_json() for change in changes], count=len(changes))


@router.get("/{version}", response_model=ModelVersionDetail, responses=error_responses(404, 422))
def get_model(version: VersionPath, registry: RegistryDep, holder: HolderDep) -> ModelVersionDetail:
    """Show a version's manifest without the item list, its metrics and its parent chain."""
    entry = registry.get(_version_ref(version))
    manifest = entry.manifest
    current = holder.current
    return ModelVersionDetail(
        **_summary(entry),
        architecture_config=manifest.get("architecture_config") or {},
        padding=manifest.get("padding") or {},
        position_scheme=manifest.get("position_scheme"),
        item_map_sha256=manifest.get("item_map_sha256"),
        rsir_params=manifest.get("rsir_params") or {},
        train_params=manifest.get("train_params") or {},
        lineage=[
            {"version": v.version, "round": v.round, "parent_version": v.parent_version, "created_at": v.created_at}
            for v in registry.lineage(entry.version)
        ],
        serving=current is not None and current.version == entry.version,
    )


@router.post(
    "/{version}/promote",
    response_model=PromotionPublic,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 404, 409, 422, 503),
)
def promote_model(
    version: VersionPath,
    registry: RegistryDep,
    holder: HolderDep,
    client: RedisDep,
    body: Annotated[PromotionCreate | None, Body()] = None,
) -> PromotionPublic:
    """Make a version the champion after checking that its checkpoint loads, and tell every API process."""
    body = body or PromotionCreate()
    entry = registry.get(_version_ref(version))
    # Redis carries the change to the other API processes. Without it they would keep
    # serving the old champion, so nothing changes while Redis is down.
    client.ping()
    change, loaded = holder.promote(entry.version, reason=body.reason, actor=body.actor)

    try:
        publish_champion_changed(client, entry.version)
        published = True
    except redis.exceptions.RedisError as exc:
        logger.error(
            "promoted model version %d, but publishing the event failed (%s); other API processes swap when they reconnect",
            entry.version,
            exc,
        )
        published = False
    return PromotionPublic(**change.to_json(), serving_version=loaded.version, event_published=published)
