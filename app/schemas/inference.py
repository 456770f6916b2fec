"""Request and response bodies of the inference endpoints: augment, generate, fidelity, recommend.

Limits that depend on settings (users per request, items per history, ``m``) are
checked in the routes; the static ranges are declared here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, model_validator

from app.schemas.common import RawItemId, StepRecordPublic, StopReasonName, UserId

__all__ = [
    "AugmentRequest",
    "AugmentResponse",
    "AugmentationStatsPublic",
    "CandidateReportPublic",
    "FidelityRequest",
    "FidelityResponse",
    "GenerateRequest",
    "GenerateResponse",
    "GenerationParamsPublic",
    "RecommendRequest",
    "RecommendResponse",
    "RecommendedItemPublic",
    "SyntheticSequencePublic",
    "UnknownItemsPublic",
    "UserHistory",
]

# Upper bounds that only keep values inside int64 tensors and sane loop sizes; the
# settings-dependent limits are stricter.
_MAX_RANK = 2**31 - 1
_MAX_SEQUENCE_LEN = 10_000
_MAX_SEED = 2**63 - 1

ModelVersionRef = Annotated[
    Annotated[int, Field(ge=1, le=_MAX_SEED)]
    | Annotated[str, Field(max_length=64, pattern=r"^([1-9][0-9]{0,17}|[a-z][a-z0-9_-]{0,63})$")]
    | None,
    Field(description="registry version number or alias to use instead of the champion; null = the champion"),
]


class UserHistory(BaseModel):
    """One user's real items in time order, oldest first."""

    user_id: UserId
    items: list[RawItemId] = Field(min_length=1, description="raw item ids, oldest first")


class _GenerationFields(BaseModel):
    """Generation parameters shared by /augment and /generate."""

    users: list[UserHistory] = Field(min_length=1, description="seed users; each starts m sequences with its earliest item")
    m: int = Field(default=5, ge=1, description="synthetic sequences started per user")
    tau: int = Field(default=20, ge=1, le=_MAX_RANK, description="rank threshold of the fidelity check, 1 = top item only")
    p: float = Field(
        default=0.5, ge=0.0, le=1.0, allow_inf_nan=False,
        description="probability that a step picks from the user's own items rather than the whole catalogue",
    )
    max_len: int | None = Field(
        default=None, ge=2, le=_MAX_SEQUENCE_LEN,
        description="maximum synthetic sequence length in items; null, or a value above the model's max_len, means the model's max_len",
    )
    temperature: float | None = Field(
        default=None, gt=0.0, le=1e6, allow_inf_nan=False,
        description="sample each step with this softmax temperature; null = greedy (the paper's choice)",
    )
    top_k: int | None = Field(default=None, ge=1, le=_MAX_RANK, description="sample among the k best pool items; null = all")
    seed: int = Field(default=0, ge=0, le=_MAX_SEED, description="seed of the coin flips and sampling; same seed, same output")
    drop_unknown: bool = Field(
        default=False, description="drop item ids the model does not know and report them, instead of rejecting the request"
    )
    model_version: ModelVersionRef = None


class AugmentRequest(_GenerationFields):
    """Users to augment and the RSIR generation parameters."""

    min_len: int = Field(default=3, ge=1, le=_MAX_SEQUENCE_LEN, description="shortest synthetic sequence kept, in items")

    @model_validator(mode="after")
    def _check_lengths(self) -> AugmentRequest:
        if self.max_len is not None and self.min_len > self.max_len:
            raise ValueError(f"min_len {self.min_len} is above max_len {self.max_len}; lower min_len or raise max_len")
        return self

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "users": [
                        {"user_id": 1, "items": [50, 172, 133, 181, 174, 98, 127]},
                        {"user_id": "demo", "items": [1, 121, 117, 300, 100]},
                    ],
                    "m": 5,
                    "tau": 20,
                    "p": 0.5,
                    "min_len": 3,
                    "seed": 0,
                }
            ]
        }
    }


class GenerateRequest(_GenerationFields):
    """Users to generate from; the fidelity check is recorded but never stops a sequence."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"users": [{"user_id": 1, "items": [50, 172, 133, 181, 174]}], "m": 3, "tau": 20, "p": 0.5, "max_len": 10, "seed": 0}
            ]
        }
    }


class SyntheticSequencePublic(BaseModel):
    """One synthetic sequence in raw item ids with its per-step fidelity record."""

    user_id: int | str = Field(description="seed user whose earliest item starts the sequence")
    items: list[int | str]
    stop_reason: StopReasonName
    steps: list[StepRecordPublic]


class AugmentationStatsPublic(BaseModel):
    """Counts of one request, from sequences started to sequences returned."""

    started: int
    kept: int
    dropped_short: int = Field(description="shorter than min_len")
    duplicates: int = Field(description="identical to an earlier sequence of this request")
    copies_of_existing: int = Field(description="identical to a submitted user history")
    stop_reasons: dict[str, int] = Field(description="started sequences per stop reason")
    mean_length: float = Field(description="items per returned sequence")
    checks: int = Field(description="fidelity checks run over all started sequences")
    checks_passed: int
    acceptance_rate: float = Field(description="kept / started")
    step_pass_rate: float = Field(description="checks_passed / checks")


class UnknownItemsPublic(BaseModel):
    """Item ids the model does not know, dropped because drop_unknown was true."""

    count: int = Field(description="distinct unknown item ids")
    items: list[int | str] = Field(description="the distinct unknown ids, first-seen order")
    dropped_events: int = Field(description="history entries removed because their item was unknown")
    skipped_users: list[int | str] = Field(default_factory=list, description="users left with no known item, so nothing was generated for them")


class GenerationParamsPublic(BaseModel):
    """The generation parameters in effect, with max_len resolved against the model."""

    m: int
    tau: int
    p: float
    max_len: int
    min_len: int
    temperature: float | None
    top_k: int | None
    fidelity: bool
    seed: int


class _GenerationResult(BaseModel):
    model_version: int = Field(description="registry version that produced the sequences")
    stats: AugmentationStatsPublic
    unknown_items: UnknownItemsPublic
    truncated_users: int = Field(description="histories cut to the model's max_len most recent items")
    history_max_len: int = Field(description="the model's max_len: how many recent items of each history it reads")
    parameters: GenerationParamsPublic


class AugmentResponse(_GenerationResult):
    """Kept synthetic sequences (pseudo-users) and the counts behind them."""

    augmentations: list[SyntheticSequencePublic] = Field(description="sequences that passed, are long enough and are new")


class GenerateResponse(_GenerationResult):
    """Generated sequences without the fidelity stop.

    Identical sequences of one request are returned once; ``stats.duplicates`` counts the rest.
    """

    sequences: list[SyntheticSequencePublic]


class FidelityRequest(BaseModel):
    """A user's history and candidate sequences to check against it."""

    items: list[RawItemId] = Field(min_length=1, description="the user's real items, oldest first")
    candidates: list[Annotated[list[RawItemId], Field(min_length=1)]] = Field(
        min_length=1, description="candidate synthetic sequences, each judged as generation would judge it"
    )
    tau: int = Field(default=20, ge=1, le=_MAX_RANK, description="rank threshold, 1 = top item only")
    model_version: ModelVersionRef = None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "items": [50, 172, 133, 181, 174, 98, 127],
                    "candidates": [[50, 181, 172, 174], [50, 1, 121, 117]],
                    "tau": 20,
                }
            ]
        }
    }


class CandidateReportPublic(BaseModel):
    """The fidelity check of one candidate."""

    steps: list[StepRecordPublic] = Field(description="one check before each item after the first")
    kept_length: int = Field(description="items kept when the candidate is cut at its first failed check")
    kept_items: list[int | str]
    stop_reason: StopReasonName | None = Field(description="why it would be cut; null when every check passed")


class FidelityResponse(BaseModel):
    """Per-candidate fidelity records."""

    model_version: int
    tau: int
    history_truncated: bool = Field(description="whether the history was cut to the model's max_len most recent items")
    reports: list[CandidateReportPublic]


class RecommendRequest(BaseModel):
    """A history to recommend the next items for."""

    items: list[RawItemId] = Field(min_length=1, description="the user's items, oldest first")
    k: int = Field(default=10, ge=1, le=100, description="number of items to return")
    exclude_history: bool = Field(default=False, description="leave the history's items out of the ranking")
    drop_unknown: bool = Field(default=False, description="drop unknown item ids instead of rejecting the request")
    model_version: ModelVersionRef = None

    model_config = {"json_schema_extra": {"examples": [{"items": [50, 172, 133, 181], "k": 10, "exclude_history": True}]}}


class RecommendedItemPublic(BaseModel):
    """One recommended item."""

    rank: int = Field(description="1 = best")
    item: int | str
    score: float = Field(description="the model's logit; higher is better")


class RecommendResponse(BaseModel):
    """Top-k next items."""

    model_version: int
    exclude_history: bool
    items: list[RecommendedItemPublic]
    unknown_items: UnknownItemsPublic
    history_truncated: bool
