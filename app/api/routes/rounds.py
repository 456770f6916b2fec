"""Routes of the rounds resource: start, list, read, cancel round jobs and fetch their data."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client.core import GaugeMetricFamily
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from rsir_engine.datasets import DATASETS

from app.api.deps import ApiKeyDep, RegistryDep, SettingsDep
from app.api.errors import ApiError, invalid_field
from app.core.config import Settings
from app.core.round_data import MEDIA_TYPES, iter_inter_lines, iter_jsonl_lines, read_round_sequences, synthetic_path, to_parquet
from app.core.store import RUNNING_STATES, TERMINAL_STATES, IdempotencyConflictError, RoundJob, RoundState, RoundStore, new_job_id
from app.core.uploads import UploadStore
from app.observability import register_collector
from app.schemas.common import ErrorPublic, ValidationErrorPublic
from app.schemas.rounds import IDEMPOTENCY_KEY_PATTERN, RoundCreate, RoundPublic, RoundsPublic, SyntheticDataFormat
from app.worker.dispatch import cancel_queued, enqueue_attempt, recover_job, rq_job_id_for
from app.worker.jobs import round_config_from_params

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["rounds"])

@dataclass
class RoundsBackend:
    """The round-job store and the RQ queue, on Redis clients of their own."""

    store: RoundStore
    queue: Queue


class _RoundJobsCollector:
    """Reports ``rsir_round_jobs{state=...}`` from the store at scrape time."""

    def __init__(self) -> None:
        self.store: RoundStore | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily("rsir_round_jobs", "Round jobs in the store, by state.", labels=["state"])]

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily("rsir_round_jobs", "Round jobs in the store, by state.", labels=["state"])
        if self.store is None:
            return [family]
        try:
            counts = self.store.count_by_state()
        except RedisError as exc:
            logger.warning("round-job gauge left empty, Redis is unreachable: %s", exc)
            return [family]
        for state, count in counts.items():
            family.add_metric([state.value], count)
        return [family]


_ROUND_JOBS = _RoundJobsCollector()
register_collector(_ROUND_JOBS)


def get_rounds_backend(request: Request) -> RoundsBackend:
    """Return the app's round-job store and queue, connecting on first use."""
    backend = getattr(request.app.state, "rounds_backend", None)
    if backend is None:
        settings: Settings = request.app.state.settings
        timeouts = {"socket_timeout": settings.redis_timeout_s, "socket_connect_timeout": settings.redis_timeout_s}
        store = RoundStore(Redis.from_url(settings.redis_url, decode_responses=True, **timeouts))
        # RQ stores pickled payloads, so its client must not decode replies.
        queue = Queue(settings.queue_name, connection=Redis.from_url(settings.redis_url, **timeouts))
        backend = RoundsBackend(store=store, queue=queue)
        request.app.state.rounds_backend = backend
        _ROUND_JOBS.store = store
    return backend


RoundsBackendDep = Annotated[RoundsBackend, Depends(get_rounds_backend)]
JobIdPath = Annotated[str, Path(description="round job id, as returned by POST /rounds", examples=["3f2a9c1e5b7d4a60"])]


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, f"round job {job_id!r} not found; list jobs with GET /rounds")


def get_round_job(job_id: JobIdPath, backend: RoundsBackendDep, settings: SettingsDep) -> RoundJob:
    """Return the job or raise a 404. A running job whose worker went silent is recovered first."""
    job = backend.store.get(job_id) if len(job_id) <= 64 else None
    if job is None:
        raise _not_found(job_id)
    age = job.heartbeat_age()
    if job.state in RUNNING_STATES and job.rq_job_id and age is not None and age > settings.stale_after_s:
        recovered = recover_job(
            backend.store,
            backend.queue,
            job.id,
            expected_rq_job_id=job.rq_job_id,
            reason=f"worker stopped responding (no heartbeat for {age:.0f} s)",
            timeout_s=settings.job_timeout_s,
        )
        job = recovered or backend.store.get(job_id) or job
    return job


RoundJobDep = Annotated[RoundJob, Depends(get_round_job)]


def _responses(**descriptions: str) -> dict[int | str, dict]:
    return {
        int(code.removeprefix("r")): {"model": ValidationErrorPublic if code == "r422" else ErrorPublic, "description": text}
        for code, text in descriptions.items()
    }


def _check_dataset(name: str, settings: Settings) -> None:
    """Raise a 422 unless ``name`` is a named dataset or an uploaded dataset id."""
    if name in DATASETS or UploadStore(settings.upload_dir).get(name) is not None:
        return
    uploads = [upload.id for upload in UploadStore(settings.upload_dir).list()]
    valid = [*sorted(DATASETS), *uploads]
    raise invalid_field(
        ("body", "dataset"),
        f"unknown dataset {name!r}; use one of: {', '.join(valid)} (named datasets, then uploads from POST /datasets)",
        name,
    )


@router.post(
    "/rounds",
    status_code=202,
    response_model=RoundPublic,
    dependencies=[ApiKeyDep],
    responses={
        200: {"model": RoundPublic, "description": "The idempotency key names an existing job, which is returned unchanged."},
        202: {"description": "Job created and queued; the Location header gives its URL."},
        **_responses(
            r401="Missing or wrong X-API-Key header.",
            r409="The idempotency key was used before with different parameters.",
            r422="Invalid parameters, or an unknown dataset (the message lists the valid ones).",
            r503="Redis is unreachable.",
        ),
    },
)
def create_round(
    body: RoundCreate,
    response: Response,
    backend: RoundsBackendDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_PATTERN, description="same as the body's idempotency_key")
    ] = None,
) -> RoundPublic:
    """Start self-improvement rounds in the background."""
    if idempotency_key and body.idempotency_key and idempotency_key != body.idempotency_key:
        raise invalid_field(
            ("header", "Idempotency-Key"),
            f"the Idempotency-Key header {idempotency_key!r} differs from the body's idempotency_key "
            f"{body.idempotency_key!r}; send one of them",
            idempotency_key,
        )
    _check_dataset(body.dataset, settings)
    params = body.parameters()
    round_config_from_params(params, settings.device)

    job_id = new_job_id()
    try:
        job, created = backend.store.create(
            params,
            max_attempts=settings.max_attempts,
            job_id=job_id,
            rq_job_id=rq_job_id_for(job_id, 1),
            idempotency_key=idempotency_key or body.idempotency_key,
        )
    except IdempotencyConflictError as exc:
        raise ApiError(409, str(exc), job_id=exc.job_id) from None
    if created:
        try:
            enqueue_attempt(backend.queue, job.id, rq_job_id_for(job.id, 1), timeout_s=settings.job_timeout_s)
        except RedisError as exc:
            backend.store.update(job.id, values={"state": RoundState.FAILED, "stage": "failed", "error": f"could not enqueue the job: {exc}"})
            raise
        logger.info("round job %s: created for dataset %s, %d round(s)", job.id, body.dataset, body.rounds)
    response.status_code = 202 if created else 200
    response.headers["Location"] = f"/rounds/{job.id}"
    return RoundPublic.from_job(job)


@router.get("/rounds", response_model=RoundsPublic, responses=_responses(r503="Redis is unreachable."))
def list_rounds(
    backend: RoundsBackendDep,
    offset: Annotated[int, Query(ge=0, description="jobs to skip, newest first")] = 0,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
) -> RoundsPublic:
    """List round jobs, newest first."""
    jobs, count = backend.store.list(offset, limit)
    return RoundsPublic(data=[RoundPublic.from_job(job) for job in jobs], count=count)


@router.get(
    "/rounds/{job_id}",
    response_model=RoundPublic,
    responses=_responses(r404="Unknown round job id.", r503="Redis is unreachable."),
)
def read_round(job: RoundJobDep) -> RoundPublic:
    """Read a round job's state, progress and results."""
    return RoundPublic.from_job(job)


@router.delete(
    "/rounds/{job_id}",
    response_model=RoundPublic,
    dependencies=[ApiKeyDep],
    responses={
        200: {"model": RoundPublic, "description": "A queued job was cancelled at once (state cancelled)."},
        202: {"model": RoundPublic, "description": "A running job was asked to stop (state cancelling); it stops at its next safe point."},
        **_responses(
            r401="Missing or wrong X-API-Key header.",
            r404="Unknown round job id.",
            r409="The job already ended (finished, failed or cancelled).",
            r503="Redis is unreachable.",
        ),
    },
)
def cancel_round(job: RoundJobDep, response: Response, backend: RoundsBackendDep) -> RoundPublic:
    """Cancel a queued job, or ask a running one to stop."""
    if job.state in TERMINAL_STATES:
        raise ApiError(409, f"round job {job.id} is already {job.state.value}; only queued or running jobs can be cancelled")
    updated = backend.store.flag_cancel(job.id) or job
    if updated.state in TERMINAL_STATES and updated.state != RoundState.CANCELLED:
        raise ApiError(409, f"round job {job.id} is already {updated.state.value}; only queued or running jobs can be cancelled")
    if updated.state == RoundState.CANCELLED and updated.rq_job_id:
        cancel_queued(backend.queue, updated.rq_job_id)
    response.status_code = 202 if updated.state == RoundState.CANCELLING else 200
    return RoundPublic.from_job(updated)


@router.get(
    "/rounds/{job_id}/data",
    response_class=Response,
    responses={
        200: {
            "description": "The round's kept synthetic sequences in raw ids.",
            "content": {MEDIA_TYPES["inter"]: {}, MEDIA_TYPES["jsonl"]: {}, MEDIA_TYPES["parquet"]: {}},
        },
        **_responses(
            r404="Unknown job, a round the job does not run, or a round without data yet.",
            r422="Invalid round number or format.",
            r503="Redis is unreachable.",
        ),
    },
)
def read_round_data(
    job: RoundJobDep,
    registry: RegistryDep,
    round_index: Annotated[
        int, Query(alias="round", ge=1, le=10, description="self-improvement round (round 0 trains on real data only)")
    ],
    data_format: Annotated[
        SyntheticDataFormat, Query(alias="format", description="inter (RecBole), parquet, or jsonl with fidelity records")
    ] = "jsonl",
) -> Response:
    """Download the synthetic sequences a round kept."""
    if round_index > job.requested_rounds:
        raise ApiError(404, f"round job {job.id} runs rounds 1..{job.requested_rounds}, not round {round_index}")
    row = job.rows.get(round_index)
    if row is None or job.run_dir is None or not synthetic_path(job.run_dir, round_index).is_file():
        where = f"{job.stage} in round {job.round}" if job.round is not None else job.stage
        raise ApiError(
            404,
            f"round {round_index} of job {job.id} has no data yet (the job is {job.state.value}, {where}); "
            "retry when the round has finished",
        )
    item_ids = registry.get(row["version"]).manifest["item_ids"]
    sequences = read_round_sequences(job.run_dir, round_index, item_ids)
    filename = f"rsir-{job.id}-round{round_index}.{data_format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if data_format == "parquet":
        return Response(to_parquet(sequences), media_type=MEDIA_TYPES["parquet"], headers=headers)
    if data_format == "inter":
        return StreamingResponse(iter_inter_lines(sequences), media_type=MEDIA_TYPES["inter"], headers=headers)
    return StreamingResponse(iter_jsonl_lines(sequences, round_index), media_type=MEDIA_TYPES["jsonl"], headers=headers)
