"""Request and response bodies of the model registry endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "AliasChangePublic",
    "AliasChangesPublic",
    "DatasetSummaryPublic",
    "LineageEntryPublic",
    "ModelVersionDetail",
    "ModelVersionPublic",
    "ModelVersionsPublic",
    "PromotionCreate",
    "PromotionPublic",
]


class DatasetSummaryPublic(BaseModel):
    """The dataset a model was trained on."""

    name: str | None = None
    fingerprint: str | None = None
    users: int | None = None
    interactions: int | None = None


class ModelVersionPublic(BaseModel):
    """One published model version."""

    version: int
    round: int | None = Field(description="self-improvement round that produced it; 0 = trained on real data only")
    parent_version: int | None = Field(description="version whose synthetic data it was trained with; null for round 0")
    aliases: list[str] = Field(description="aliases that point at it, such as champion")
    created_at: str | None = Field(description="UTC time the checkpoint was written, ISO 8601")
    architecture: str | None
    num_items: int | None
    dataset: DatasetSummaryPublic
    run_id: str | None
    metrics: dict[str, Any] = Field(description="validation and test metrics of real users, as stored with the model")


class ModelVersionsPublic(BaseModel):
    """Every published version, oldest first, and the current aliases."""

    data: list[ModelVersionPublic]
    count: int
    aliases: dict[str, int] = Field(description="alias -> version")


class LineageEntryPublic(BaseModel):
    """One ancestor in a model's parent chain."""

    version: int
    round: int | None
    parent_version: int | None
    created_at: str | None


class ModelVersionDetail(ModelVersionPublic):
    """A version's manifest without the item list, and its parent chain."""

    architecture_config: dict[str, Any]
    padding: dict[str, Any]
    position_scheme: str | None
    item_map_sha256: str | None
    rsir_params: dict[str, Any] = Field(description="generation parameters of the round that produced it; empty for round 0")
    train_params: dict[str, Any]
    lineage: list[LineageEntryPublic] = Field(description="this version, its parent, its grandparent and so on")
    serving: bool = Field(description="whether this API process serves it as the champion right now")


class PromotionCreate(BaseModel):
    """Reason and actor recorded when a version becomes the champion."""

    reason: str = Field(default="promoted through the API", max_length=500)
    actor: str | None = Field(default=None, max_length=128, description="person or system that asked, recorded in the alias history")

    model_config = {"json_schema_extra": {"examples": [{"reason": "round 2 beats round 1 on validation NDCG@10", "actor": "alice"}]}}


class AliasChangePublic(BaseModel):
    """One recorded move of an alias."""

    alias: str
    from_version: int | None
    to_version: int
    at: str = Field(description="UTC time of the move, ISO 8601")
    reason: str
    actor: str | None


class PromotionPublic(AliasChangePublic):
    """The recorded alias move, and what this process and its peers did about it."""

    serving_version: int = Field(description="champion version this process serves after the promotion")
    event_published: bool = Field(description="whether the champion_changed event reached Redis, so other API processes swap too")


class AliasChangesPublic(BaseModel):
    """Recorded alias moves, oldest first."""

    data: list[AliasChangePublic]
    count: int
