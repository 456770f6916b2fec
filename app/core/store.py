"""Store round jobs in the project's own Redis keys, which never expire.

RQ keeps its job records only for a while after a job ends, but a run's results must stay
readable for days, so every round job also lives here:

    rsir:rounds:<id>              hash, one field per attribute (see ``RoundJob``)
    rsir:rounds:index             sorted set of job ids scored by creation time (paging)
    rsir:rounds:state:<state>     set of job ids per state (gauges, the stalled-job reaper)
    rsir:rounds:idem:<key>        idempotency key -> job id

Per-round results live in hash fields ``row:<round>``, promotions in ``promoted:<round>``
and the failure text of each attempt in ``attempt_error:<attempt>``. Each writer therefore
sets its own fields and never rewrites a shared JSON list. State changes go through one Lua
script that checks the current state (and, for a worker, that the job still belongs to its
attempt) and moves the id between the state sets in the same step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from redis import Redis

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "IdempotencyConflictError",
    "RoundJob",
    "RoundState",
    "RoundStore",
    "new_job_id",
    "params_digest",
]

logger = logging.getLogger(__name__)

KEY_PREFIX = "rsir:rounds"
INDEX_KEY = f"{KEY_PREFIX}:index"


class RoundState(str, Enum):
    """Lifecycle state of a round job."""

    QUEUED = "queued"
    STARTED = "started"
    CANCELLING = "cancelling"  # cancel requested, the worker stops at its next safe point
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATES = frozenset({RoundState.QUEUED, RoundState.STARTED, RoundState.CANCELLING})
TERMINAL_STATES = frozenset({RoundState.FINISHED, RoundState.FAILED, RoundState.CANCELLED})
# States in which a worker process is expected to send heartbeats.
RUNNING_STATES = (RoundState.STARTED, RoundState.CANCELLING)


class IdempotencyConflictError(Exception):
    """Raised when an idempotency key is reused with different request parameters."""

    def __init__(self, key: str, job_id: str) -> None:
        self.key = key
        self.job_id = job_id
        super().__init__(
            f"idempotency key {key!r} was already used for round job {job_id} with different "
            "parameters. Send the same parameters to get that job back, or use a new key."
        )


def new_job_id() -> str:
    """Return a fresh round-job id: 16 hex digits, valid as part of an RQ job id."""
    return uuid.uuid4().hex[:16]


def params_digest(params: Mapping[str, Any]) -> str:
    """Return a SHA-256 over the canonical JSON of request parameters."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class RoundJob:
    """One round job as stored in Redis; times are Unix seconds (UTC)."""

    id: str
    state: RoundState
    params: dict[str, Any]
    created_at: float
    max_attempts: int
    stage: str | None = None
    round: int | None = None  # round in progress or last reached
    progress: float = 0.0  # fraction of the whole job done, 0..1
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # round -> RoundResult.to_dict()
    promoted: dict[int, int] = field(default_factory=dict)  # round -> version promoted to champion
    attempt_errors: dict[int, str] = field(default_factory=dict)  # attempt -> why it stopped
    error: str | None = None  # final error of a failed job
    started_at: float | None = None
    ended_at: float | None = None
    heartbeat_at: float | None = None
    cancel_requested_at: float | None = None
    attempts: int = 0  # attempts a worker has started
    rq_job_id: str | None = None  # RQ job of the current attempt
    worker_pid: int | None = None  # work-horse process of the current attempt
    idempotency_key: str | None = None
    run_dir: str | None = None  # the worker's run folder, set when an attempt starts

    @property
    def versions(self) -> list[int]:
        """Model versions this job published, in round order."""
        return [row["version"] for _, row in sorted(self.rows.items()) if row.get("version") is not None]

    @property
    def requested_rounds(self) -> int:
        """Self-improvement rounds requested (round 0, the base model, comes on top)."""
        return int(self.params.get("rounds", 0))

    def heartbeat_age(self, now: float | None = None) -> float | None:
        """Return seconds since the last sign of life of a running job, None when it never ran."""
        last = self.heartbeat_at or self.started_at
        if last is None:
            return None
        return (now if now is not None else time.time()) - last


_SCALAR_FIELDS: dict[str, type] = {
    "stage": str,
    "round": int,
    "progress": float,
    "error": str,
    "started_at": float,
    "ended_at": float,
    "heartbeat_at": float,
    "cancel_requested_at": float,
    "attempts": int,
    "rq_job_id": str,
    "worker_pid": int,
    "idempotency_key": str,
    "run_dir": str,
}

# KEYS[1] job hash; ARGV[1] job id, ARGV[2] JSON list of allowed current states ([] = any),
# ARGV[3] JSON {field: expected value}, ARGV[4] JSON {field: new value}, ARGV[5] JSON list of
# fields to delete. Returns 1 when applied, 0 when a condition failed, -1 for an unknown job.
_UPDATE_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'state')
if not current then return -1 end
local allowed = cjson.decode(ARGV[2])
if #allowed > 0 then
  local ok = false
  for _, state in ipairs(allowed) do
    if state == current then ok = true end
  end
  if not ok then return 0 end
end
for name, expected in pairs(cjson.decode(ARGV[3])) do
  if redis.call('HGET', KEYS[1], name) ~= expected then return 0 end
end
local flat = {}
local updates = cjson.decode(ARGV[4])
for name, value in pairs(updates) do
  table.insert(flat, name)
  table.insert(flat, value)
end
if #flat > 0 then redis.call('HSET', KEYS[1], unpack(flat)) end
local removed = cjson.decode(ARGV[5])
if #removed > 0 then redis.call('HDEL', KEYS[1], unpack(removed)) end
local new = updates['state']
if new and new ~= current then
  redis.call('SREM', 'rsir:rounds:state:' .. current, ARGV[1])
  redis.call('SADD', 'rsir:rounds:state:' .. new, ARGV[1])
end
return 1
"""


def _job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:{job_id}"


def _state_key(state: RoundState) -> str:
    return f"{KEY_PREFIX}:state:{state.value}"


def _idempotency_key(key: str) -> str:
    return f"{KEY_PREFIX}:idem:{key}"


def _encode(value: Any) -> str:
    if isinstance(value, RoundState):
        return value.value
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _decode(fields: Mapping[str, str]) -> RoundJob:
    """Build a RoundJob from a hash read with decode_responses=True."""
    job = RoundJob(
        id=fields["id"],
        state=RoundState(fields["state"]),
        params=json.loads(fields["params"]),
        created_at=float(fields["created_at"]),
        max_attempts=int(fields["max_attempts"]),
    )
    for name, kind in _SCALAR_FIELDS.items():
        if name in fields:
            setattr(job, name, kind(fields[name]))
    for name, value in fields.items():
        prefix, _, suffix = name.partition(":")
        if prefix == "row":
            job.rows[int(suffix)] = json.loads(value)
        elif prefix == "promoted":
            job.promoted[int(suffix)] = int(value)
        elif prefix == "attempt_error":
            job.attempt_errors[int(suffix)] = value
    return job


class RoundStore:
    """Round-job records in Redis; pass a client made with ``decode_responses=True``."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._update = redis.register_script(_UPDATE_SCRIPT)

    # ----- create and read -------------------------------------------------------------

    def create(
        self,
        params: Mapping[str, Any],
        *,
        max_attempts: int,
        job_id: str | None = None,
        rq_job_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[RoundJob, bool]:
        """Store a new queued job, or return the job an idempotency key already names.

        ``rq_job_id`` names the RQ job of the first attempt, which the caller enqueues
        once this returns a new job. Returns the job and whether it was created now.
        Raises IdempotencyConflictError when the key was used with different parameters.
        """
        job_id = job_id or new_job_id()
        digest = params_digest(params)
        now = time.time()
        record = {
            "id": job_id,
            "state": RoundState.QUEUED.value,
            "params": json.dumps(dict(params)),
            "params_digest": digest,
            "created_at": repr(now),
            "max_attempts": str(max_attempts),
            "stage": "queued",
            "progress": "0.0",
            "attempts": "0",
        }
        if idempotency_key is not None:
            record["idempotency_key"] = idempotency_key
        if rq_job_id is not None:
            record["rq_job_id"] = rq_job_id

        # The record exists before the idempotency key points at it, so a concurrent
        # request that finds the key always finds the job too.
        with self.redis.pipeline() as pipe:
            pipe.hset(_job_key(job_id), mapping=record)
            pipe.zadd(INDEX_KEY, {job_id: now})
            pipe.sadd(_state_key(RoundState.QUEUED), job_id)
            pipe.execute()
        if idempotency_key is None:
            return _decode(record), True

        if self.redis.set(_idempotency_key(idempotency_key), job_id, nx=True):
            return _decode(record), True
        self._discard(job_id)
        existing_id = self.redis.get(_idempotency_key(idempotency_key))
        existing = self.get(existing_id) if existing_id else None
        if existing is None:
            raise IdempotencyConflictError(idempotency_key, str(existing_id))
        if self.redis.hget(_job_key(existing.id), "params_digest") != digest:
            raise IdempotencyConflictError(idempotency_key, existing.id)
        logger.info("round job %s: returned again for idempotency key %r", existing.id, idempotency_key)
        return existing, False

    def _discard(self, job_id: str) -> None:
        """Delete a record that lost an idempotency race before anyone saw it."""
        with self.redis.pipeline() as pipe:
            pipe.delete(_job_key(job_id))
            pipe.zrem(INDEX_KEY, job_id)
            pipe.srem(_state_key(RoundState.QUEUED), job_id)
            pipe.execute()

    def get(self, job_id: str) -> RoundJob | None:
        """Return the job, or None when no job has that id."""
        fields = self.redis.hgetall(_job_key(job_id))
        return _decode(fields) if fields else None

    def list(self, offset: int = 0, limit: int = 20) -> tuple[list[RoundJob], int]:
        """Return one page of jobs, newest first, and the total number of jobs."""
        ids = self.redis.zrevrange(INDEX_KEY, offset, offset + limit - 1) if limit > 0 else []
        with self.redis.pipeline() as pipe:
            for job_id in ids:
                pipe.hgetall(_job_key(job_id))
            pipe.zcard(INDEX_KEY)
            *records, total = pipe.execute()
        return [_decode(fields) for fields in records if fields], int(total)

    def ids_in_state(self, *states: RoundState) -> list[str]:
        """Return the ids of jobs in any of ``states``."""
        ids: list[str] = []
        for state in states:
            ids.extend(self.redis.smembers(_state_key(state)))
        return ids

    def count_by_state(self) -> dict[RoundState, int]:
        """Return how many jobs are in each state."""
        with self.redis.pipeline() as pipe:
            for state in RoundState:
                pipe.scard(_state_key(state))
            counts = pipe.execute()
        return dict(zip(RoundState, (int(count) for count in counts)))

    # ----- change ----------------------------------------------------------------------

    def update(
        self,
        job_id: str,
        *,
        from_states: Iterable[RoundState] = (),
        where: Mapping[str, Any] | None = None,
        values: Mapping[str, Any] | None = None,
        clear: Iterable[str] = (),
    ) -> bool:
        """Set fields atomically when the job is in ``from_states`` and matches ``where``.

        ``values`` may contain ``state``; the job then moves between the state sets too.
        A value of None deletes that field. Returns whether the change was applied.
        """
        updates = {name: _encode(value) for name, value in (values or {}).items() if value is not None}
        removed = [name for name, value in (values or {}).items() if value is None] + list(clear)
        result = self._update(
            keys=[_job_key(job_id)],
            args=[
                job_id,
                json.dumps([RoundState(state).value for state in from_states]),
                json.dumps({name: _encode(value) for name, value in (where or {}).items()}),
                json.dumps(updates),
                json.dumps(removed),
            ],
        )
        return int(result) == 1

    def record_round(self, job_id: str, row: Mapping[str, Any], *, rq_job_id: str) -> bool:
        """Store one finished round's result row (RoundResult.to_dict()) for the job's current attempt."""
        return self.update(
            job_id,
            where={"rq_job_id": rq_job_id},
            values={f"row:{int(row['round'])}": dict(row)},
        )

    def record_promotion(self, job_id: str, round_index: int, version: int) -> None:
        """Record that the job's round promoted ``version`` to champion."""
        self.update(job_id, values={f"promoted:{round_index}": version})

    def heartbeat(self, job_id: str, *, rq_job_id: str, **values: Any) -> bool:
        """Stamp a sign of life (and any progress ``values``) for the job's current attempt."""
        return self.update(
            job_id,
            from_states=RUNNING_STATES,
            where={"rq_job_id": rq_job_id},
            values={"heartbeat_at": repr(time.time()), **values},
        )

    def flag_cancel(self, job_id: str) -> RoundJob | None:
        """Cancel a queued job or ask a running one to stop; return the job as it is now.

        A queued job becomes ``cancelled`` at once, a started one ``cancelling``. Jobs
        in any other state are returned unchanged.
        """
        now = repr(time.time())
        if self.update(
            job_id,
            from_states=[RoundState.QUEUED],
            values={"state": RoundState.CANCELLED, "stage": "cancelled", "ended_at": now, "cancel_requested_at": now},
        ):
            logger.info("round job %s: cancelled before it started", job_id)
        elif self.update(
            job_id,
            from_states=[RoundState.STARTED],
            values={"state": RoundState.CANCELLING, "cancel_requested_at": now},
        ):
            logger.info("round job %s: cancel requested, stopping at the next safe point", job_id)
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        """Return whether someone asked the job to stop."""
        return self.redis.hexists(_job_key(job_id), "cancel_requested_at")
