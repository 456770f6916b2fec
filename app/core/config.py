"""Service settings, read from ``RSIR_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Every setting of the API and the worker; each field maps to ``RSIR_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RSIR_", env_file=".env", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    checkpoint_dir: Path = Path("models")  # model registry root
    data_dir: Path = Path("data")  # named public datasets
    upload_dir: Path = Path("data/uploads")  # datasets uploaded through POST /datasets
    runs_dir: Path = Path("runs")  # per-job run folders with synthetic data
    device: str = "auto"  # auto = CUDA when present, else CPU
    # CPU threads torch may use in this process; None keeps torch's default (one per core).
    # On a small CPU shared by the API and a worker, 1 avoids threads waiting on each other.
    torch_threads: int | None = Field(default=None, ge=1)

    api_key: str | None = None  # when set, required for POST /rounds, DELETE /rounds/{id}, POST /datasets and promotion
    bootstrap_champion: bool = True  # train a first champion on ML-100K when the registry is empty
    bootstrap_dataset: str = "ml-100k"
    bootstrap_max_epochs: int = Field(default=200, ge=1)

    queue_name: str = "rounds"
    job_timeout_s: int = Field(default=24 * 3600, ge=60)  # one job may run several rounds on a large dataset
    promotion: Literal["auto", "never", "always"] = "auto"  # auto: only when validation NDCG@10 beats the champion's
    heartbeat_interval_s: float = Field(default=5.0, gt=0)  # how often a running job stamps a sign of life, seconds
    stale_after_s: float = Field(default=60.0, gt=0)  # a running job without a heartbeat for this long is reaped, seconds
    reaper_interval_s: float = Field(default=15.0, gt=0)  # how often each worker looks for stalled jobs, seconds
    max_attempts: int = Field(default=3, ge=1)  # worker starts per job, first run and re-runs after a stalled worker

    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)  # JSON request bodies
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)  # dataset uploads
    max_users_per_request: int = Field(default=256, ge=1)
    max_sequence_items: int = Field(default=10_000, ge=1)  # items per user history in a request
    max_m: int = Field(default=50, ge=1)  # synthetic sequences per user in one request

    model_cache_size: int = Field(default=2, ge=0)  # non-champion versions kept loaded for model_version requests
    redis_timeout_s: float = Field(default=2.0, gt=0)  # connect and command timeout of the API's Redis client, seconds


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once."""
    return Settings()
