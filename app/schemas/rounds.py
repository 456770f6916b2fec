"""Request and response bodies of the round-job endpoints."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.store import RoundJob, RoundState

__all__ = [
    "AttemptErrorPublic",
    "RoundCreate",
    "RoundGenerationParams",
    "RoundModelParams",
    "RoundPublic",
    "RoundResultPublic",
    "RoundTrainingParams",
    "RoundsPublic",
    "SyntheticDataFormat",
]

SyntheticDataFormat = Literal["inter", "parquet", "jsonl"]
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class RoundModelParams(BaseModel):
    """Size of the SASRec model trained in every round."""

    model_config = ConfigDict(extra="forbid")

    max_len: int = Field(50, ge=2, le=1000, description="items of context the model reads")
    hidden_size: int = Field(64, ge=8, le=1024, description="embedding width; a multiple of num_heads")
    num_layers: int = Field(2, ge=1, le=12)
    num_heads: int = Field(2, ge=1, le=16)
    inner_size: int = Field(256, ge=8, le=8192, description="width of the feed-forward layer")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


class RoundGenerationParams(BaseModel):
    """Generation and fidelity-filter settings of every round."""

    model_config = ConfigDict(extra="forbid")

    m: int = Field(5, ge=1, le=100, description="synthetic sequences started per seed user")
    tau: int = Field(20, ge=1, le=100_000, description="rank threshold of the fidelity check; 1 = the top item only")
    p: float = Field(0.5, ge=0.0, le=1.0, description="probability that a step picks from the user's own items")
    max_len: int | None = Field(None, ge=2, le=1000, description="maximum synthetic sequence length; null = the model's max_len")
    min_len: int = Field(3, ge=1, le=1000, description="minimum length of a kept synthetic sequence")
    temperature: float | None = Field(None, gt=0, description="sample with this softmax temperature; null = greedy")
    top_k: int | None = Field(None, ge=1, description="sample among the k best pool items; null = all")
    fidelity: bool = Field(True, description="false turns the fidelity stop off (an ablation; expect worse data)")
    seed: int = Field(0, ge=0, description="seed of the generation randomness; round r uses seed + r")


class RoundTrainingParams(BaseModel):
    """Training and evaluation settings of every round's model."""

    model_config = ConfigDict(extra="forbid")

    max_epochs: int = Field(200, ge=1, le=10_000)
    patience: int = Field(10, ge=1, le=10_000, description="epochs without a better validation NDCG@10 before stopping")
    batch_size: int = Field(128, ge=1, le=65_536, description="training windows per step")
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="Adam learning rate")
    num_negatives: int | None = Field(None, ge=1, description="sampled softmax with this many negatives; null = full softmax")
    exclude_history: bool = Field(False, description="exclude each user's history items from the evaluation ranking")
    seed: int = Field(0, ge=0, description="training seed; round r uses seed + r")


class RoundCreate(BaseModel):
    """A request to run self-improvement rounds in the background."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset": "ml-100k",
                    "rounds": 1,
                    "generation": {"m": 5, "tau": 20, "p": 0.5},
                    "training": {"max_epochs": 20, "patience": 5},
                }
            ]
        },
    )

    dataset: str = Field(
        min_length=1,
        max_length=128,
        description="a named dataset (ml-100k, ml-1m) or the id of an uploaded one (see GET /datasets)",
    )
    rounds: int = Field(1, ge=1, le=10, description="self-improvement rounds after the base model (round 0)")
    architecture: Literal["sasrec"] = "sasrec"
    model: RoundModelParams = Field(default_factory=RoundModelParams)
    generation: RoundGenerationParams = Field(default_factory=RoundGenerationParams)
    training: RoundTrainingParams = Field(default_factory=RoundTrainingParams)
    warm_start: bool = Field(False, description="start each successor from its parent's weights instead of from scratch")
    seed_from: Literal["real", "all"] = Field("real", description="seed generation from real users only, or from pseudo-users too")
    min_rating: float | None = Field(None, description="keep only events rated at least this much (needs a rating column)")
    k_core: int | None = Field(None, ge=2, le=1000, description="repeatedly drop users and items with fewer events")
    idempotency_key: str | None = Field(
        None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="repeating a request with the same key returns the first job instead of starting another "
        "(the Idempotency-Key header works too)",
    )

    def parameters(self) -> dict[str, Any]:
        """Return the job parameters as stored: everything but the idempotency key."""
        return self.model_dump(mode="json", exclude={"idempotency_key"})


class RoundResultPublic(BaseModel):
    """One finished round: its model version and metrics on real users."""

    round: int = Field(description="0 = the base model trained on real data only")
    version: int | None = Field(description="registry version published by the round")
    promoted: bool = Field(description="whether this round's version was made champion")
    real_sequences: int
    synthetic_sequences: int = Field(description="pseudo-users in this round's training data")
    augmentation: dict[str, Any] | None = Field(description="generation counts of the round; null for round 0")
    valid: dict[str, float] = Field(description="validation metrics of the selected epoch, such as ndcg@10")
    test: dict[str, float] = Field(description="test metrics, read once after training")
    best_epoch: int
    epochs_run: int
    train_seconds: float
    generation_seconds: float
    exclude_history: bool = Field(description="whether history items were excluded from the ranking")


class AttemptErrorPublic(BaseModel):
    """The reason one attempt of a job ended without finishing it."""

    attempt: int
    message: str


def _request(params: dict[str, Any]) -> RoundCreate | None:
    """Return the stored parameters as a RoundCreate, or None for a record an older version wrote."""
    try:
        return RoundCreate.model_validate(params)
    except ValidationError:
        return None


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=timezone.utc) if value is not None else None


_STATE_MESSAGES = {
    RoundState.CANCELLING: "cancel requested; the job stops at its next safe point "
    "(between training epochs or generation batches), and finished rounds stay published",
    RoundState.CANCELLED: "cancelled; rounds finished before the cancel stay published",
}


class RoundPublic(BaseModel):
    """A round job: its state, progress, results and published versions."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2a9c1e5b7d4a60",
                    "state": "started",
                    "stage": "training",
                    "round": 1,
                    "progress": 0.55,
                    "dataset": "ml-100k",
                    "rounds": 1,
                    "results": [],
                    "versions": [7],
                    "promoted_versions": [7],
                    "attempts": 1,
                    "max_attempts": 3,
                    "attempt_errors": [],
                    "error": None,
                    "message": None,
                    "created_at": "2026-03-01T12:00:00Z",
                    "started_at": "2026-03-01T12:00:01Z",
                    "ended_at": None,
                    "heartbeat_at": "2026-03-01T12:03:10Z",
                }
            ]
        }
    )

    id: str
    state: RoundState
    stage: str | None = Field(description="loading_data, training, generating, evaluating, published, resumed, ...")
    round: int | None = Field(description="round in progress, or the last one reached")
    progress: float = Field(ge=0.0, le=1.0, description="fraction of the whole job done")
    dataset: str
    rounds: int = Field(description="self-improvement rounds requested after round 0")
    request: RoundCreate | None = Field(None, description="the parameters the job was created with")
    results: list[RoundResultPublic] = Field(description="finished rounds, in order")
    versions: list[int] = Field(description="model versions published by the job, in round order")
    promoted_versions: list[int] = Field(description="versions the job made champion, in order")
    attempts: int = Field(description="times a worker started the job")
    max_attempts: int
    attempt_errors: list[AttemptErrorPublic] = Field(description="why earlier attempts stopped, such as a worker that died")
    error: str | None = Field(description="why the job failed; null unless state is failed")
    message: str | None = Field(description="what the state means for the caller, where it needs explaining")
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    heartbeat_at: datetime | None = Field(description="last sign of life of the worker running the job")

    @classmethod
    def from_job(cls, job: RoundJob) -> RoundPublic:
        """Build the public view of a stored job."""
        results = [
            RoundResultPublic(**{key: row.get(key) for key in RoundResultPublic.model_fields if key != "promoted"}, promoted=round_index in job.promoted)
            for round_index, row in sorted(job.rows.items())
        ]
        return cls(
            id=job.id,
            state=job.state,
            stage=job.stage,
            round=job.round,
            progress=min(1.0, max(0.0, job.progress)),
            dataset=str(job.params.get("dataset")),
            rounds=job.requested_rounds,
            request=_request({**job.params, "idempotency_key": job.idempotency_key}),
            results=results,
            versions=job.versions,
            promoted_versions=[version for _, version in sorted(job.promoted.items())],
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            attempt_errors=[AttemptErrorPublic(attempt=attempt, message=message) for attempt, message in sorted(job.attempt_errors.items())],
            error=job.error,
            message=_STATE_MESSAGES.get(job.state),
            created_at=_time(job.created_at),
            started_at=_time(job.started_at),
            ended_at=_time(job.ended_at),
            heartbeat_at=_time(job.heartbeat_at),
        )


class RoundsPublic(BaseModel):
    """One page of round jobs, newest first, and the total number of jobs."""

    data: list[RoundPublic]
    count: int = Field(description="all round jobs, not only this page")
