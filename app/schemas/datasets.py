"""Response bodies of the dataset endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DatasetPublic", "DatasetsPublic"]


class DatasetPublic(BaseModel):
    """A dataset that round jobs can train on: a named public one or an upload."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "up-4c1d2e3f5a6b",
                    "name": "shop-clicks",
                    "source": "upload",
                    "description": None,
                    "fetched": None,
                    "format": "csv",
                    "filename": "shop-clicks.csv",
                    "size_bytes": 18211,
                    "rows": 720,
                    "users": 60,
                    "items": 40,
                    "fingerprint": "9b1f0c2d…",
                    "created_at": "2026-03-01T12:00:00+00:00",
                    "columns": {"user_col": "user_id", "item_col": "item_id", "time_col": "timestamp", "rating_col": None},
                }
            ]
        }
    )

    id: str = Field(description="what POST /rounds takes as dataset")
    name: str
    source: Literal["public", "upload"]
    description: str | None = Field(None, description="what a named public dataset contains")
    fetched: bool | None = Field(None, description="whether a public dataset is on disk already; null for uploads")
    format: str | None = Field(None, description="csv, parquet or inter for uploads")
    filename: str | None = Field(None, description="file name the upload was sent with")
    size_bytes: int | None = None
    rows: int | None = Field(None, description="interaction rows in the file")
    users: int | None = None
    items: int | None = None
    fingerprint: str | None = Field(None, description="SHA-256 over users, items and their order; models record it")
    created_at: str | None = Field(None, description="UTC upload time, ISO 8601")
    columns: dict[str, str | None] | None = Field(None, description="source columns read for user, item, time and rating")


class DatasetsPublic(BaseModel):
    """Every dataset round jobs can use: named public ones first, then uploads, oldest first."""

    data: list[DatasetPublic]
    count: int
