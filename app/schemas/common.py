"""Types and bodies shared by several resources: raw ids, errors, health."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainValidator, WithJsonSchema

__all__ = [
    "MAX_RAW_ID_CHARS",
    "MAX_RAW_INT_ID",
    "ErrorDetail",
    "ErrorPublic",
    "HealthPublic",
    "RawItemId",
    "ReadinessPublic",
    "StepRecordPublic",
    "StopReasonName",
    "UserId",
    "ValidationErrorPublic",
    "ValidationIssue",
]

# Largest integer id accepted: 2**53 is the largest integer that JSON parsers working in
# doubles (JavaScript, many others) represent exactly.
MAX_RAW_INT_ID = 2**53
MAX_RAW_ID_CHARS = 128


def _raw_id_validator(kind: str):
    """Build a validator that accepts an int in [0, 2**53] or a non-blank string of at most 128 characters."""

    def validate(value: Any) -> int | str:
        # bool is an int subclass, but true/false as an id is always a client bug.
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{kind} {value!r} must be an integer or a string")
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"{kind} {value} is negative; ids are integers from 0 to 2**53 or strings")
            if value > MAX_RAW_INT_ID:
                raise ValueError(f"{kind} {value} is above 2**53; send large ids as strings of at most {MAX_RAW_ID_CHARS} characters")
            return value
        if not value.strip():
            raise ValueError(f"{kind} {value!r} is blank; send a non-empty id")
        if len(value) > MAX_RAW_ID_CHARS:
            raise ValueError(f"{kind} {value[:32]!r}... has {len(value)} characters, more than the maximum of {MAX_RAW_ID_CHARS}")
        return value

    return validate


_RAW_ID_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_RAW_INT_ID},
        {"type": "string", "minLength": 1, "maxLength": MAX_RAW_ID_CHARS},
    ]
}

RawItemId = Annotated[
    int | str,
    PlainValidator(_raw_id_validator("item id")),
    WithJsonSchema({**_RAW_ID_SCHEMA, "description": "raw item id as in the training data, such as a MovieLens movie id"}),
]
UserId = Annotated[
    int | str,
    PlainValidator(_raw_id_validator("user id")),
    WithJsonSchema({**_RAW_ID_SCHEMA, "description": "the caller's user id, echoed back in results"}),
]

StopReasonName = Literal["fidelity", "exhausted", "pool_empty", "max_len"]


class StepRecordPublic(BaseModel):
    """One fidelity check of a synthetic sequence, in raw item ids."""

    step: int = Field(description="items in the prefix when the check ran (1 = after the first item)")
    best_rank: int = Field(
        description="best rank (1 = top) of the user's real items not yet in the prefix; 0 when none remain"
    )
    passed: bool = Field(description="whether best_rank was within tau")
    item: int | str | None = Field(description="raw id of the item appended after the check; null when nothing was appended")


class ErrorDetail(BaseModel):
    """What went wrong, with the offending values where there are any.

    Some errors add fields of their own, such as ``job_id`` on a conflicting round job.
    """

    model_config = {"extra": "allow"}

    message: str
    unknown_items: list[int | str] | None = Field(
        default=None, description="raw item ids that the model's catalogue does not contain (distinct, first-seen order)"
    )


class ErrorPublic(BaseModel):
    """Body of every error this service raises itself."""

    detail: ErrorDetail

    model_config = {"json_schema_extra": {"examples": [{"detail": {"message": "model version 42 not found in registry models. Published versions: 1..3."}}]}}


class ValidationIssue(BaseModel):
    """One invalid field of a request, as FastAPI reports it."""

    loc: list[int | str] = Field(description="where the value is, such as ['body', 'users', 0, 'items', 2]")
    msg: str
    type: str
    input: Any = Field(default=None, description="the rejected value; long lists and strings are shortened")


class ValidationErrorPublic(BaseModel):
    """Body of a 422: a list of invalid fields, or a message listing unknown items."""

    detail: list[ValidationIssue] | ErrorDetail

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"detail": [{"loc": ["body", "m"], "msg": "Input should be greater than or equal to 1", "type": "greater_than_equal", "input": 0}]},
                {
                    "detail": {
                        "message": "1 item id(s) are not in the model's catalogue: 999999. Remove them, or drop them with --drop-unknown (CLI) or \"drop_unknown\": true (API).",
                        "unknown_items": [999999],
                    }
                },
            ]
        }
    }


class HealthPublic(BaseModel):
    """Liveness of the process."""

    status: Literal["alive"] = "alive"


class ReadinessPublic(BaseModel):
    """Whether this process can serve requests, and why not."""

    ready: bool
    redis: bool = Field(description="whether Redis responded to a PING just now")
    model_version: int | None = Field(description="champion version being served; null while none is loaded")
    reasons: list[str] = Field(description="what keeps the process from being ready; empty when ready")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"ready": True, "redis": True, "model_version": 3, "reasons": []},
                {"ready": False, "redis": True, "model_version": None, "reasons": ["model not loaded yet: bootstrapping champion on ml-100k"]},
            ]
        }
    }
