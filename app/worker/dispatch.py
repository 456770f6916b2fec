"""Put round jobs on the RQ queue, take them off, and recover jobs whose worker died.

Each attempt of a round job is a separate RQ job with the id ``<job id>-<attempt>``, and
the store records which RQ job owns the round job now. A worker that lost ownership (its
attempt was reaped and re-enqueued) can therefore never write over the new attempt.

A job counts as stalled when its worker stopped sending heartbeats. Three places notice:

* ``reap_stalled``: every worker at start-up and periodically, and the API lazily when it
  reads a running job with an old heartbeat;
* ``on_work_horse_killed``: the worker whose work horse died (``kill -9``, out of memory);
* ``on_rq_failure``: RQ's own clean-up of its StartedJobRegistry, which moves jobs whose
  worker vanished to the FailedJobRegistry and calls the job's failure callback.

All three call ``recover_job``, whose state change is conditional on the RQ job id, so a
stalled attempt is re-enqueued (or failed) exactly once. This module never imports torch,
because the worker's parent process loads it and must stay free of CUDA.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from redis import ConnectionPool, Redis
from rq import Callback, Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from app.core.store import RUNNING_STATES, RoundJob, RoundState, RoundStore

__all__ = [
    "JOB_FUNCTION",
    "cancel_queued",
    "enqueue_attempt",
    "on_rq_failure",
    "on_work_horse_killed",
    "reap_stalled",
    "recover_job",
    "rq_job_id_for",
]

logger = logging.getLogger(__name__)

# Referenced by name, so a process that enqueues never imports the job module or the engine.
JOB_FUNCTION = "app.worker.jobs.run_rounds_job"
FAILURE_CALLBACK = "app.worker.dispatch.on_rq_failure"
# RQ keeps its own records of ended attempts for a week; the round job itself never expires.
RQ_RECORD_TTL_S = 7 * 24 * 3600


def rq_job_id_for(job_id: str, attempt: int) -> str:
    """Return the RQ job id of a round job's attempt (1-based)."""
    return f"{job_id}-{attempt}"


def enqueue_attempt(queue: Queue, job_id: str, rq_job_id: str, *, timeout_s: int) -> Job:
    """Put one attempt of a round job on the queue."""
    rq_job = queue.enqueue(
        JOB_FUNCTION,
        job_id,
        job_id=rq_job_id,
        job_timeout=timeout_s,
        result_ttl=RQ_RECORD_TTL_S,
        failure_ttl=RQ_RECORD_TTL_S,
        description=f"round job {job_id}",
        on_failure=Callback(FAILURE_CALLBACK),
    )
    logger.info("round job %s: enqueued as RQ job %s on queue %s", job_id, rq_job_id, queue.name)
    return rq_job


def cancel_queued(queue: Queue, rq_job_id: str) -> None:
    """Take an attempt off the queue. A worker that dequeued it already skips it on start."""
    try:
        Job.fetch(rq_job_id, connection=queue.connection).cancel()
    except (NoSuchJobError, InvalidJobOperation) as exc:
        logger.debug("RQ job %s: nothing to cancel (%s)", rq_job_id, exc)


def _resume_round(job: RoundJob) -> int:
    """Return the round a new attempt starts with: the one after the last finished round."""
    return max(job.rows) + 1 if job.rows else 0


def recover_job(
    store: RoundStore,
    queue: Queue,
    job_id: str,
    *,
    expected_rq_job_id: str,
    reason: str,
    timeout_s: int,
) -> RoundJob | None:
    """Re-enqueue, fail or finish cancelling a job whose attempt ``expected_rq_job_id`` died.

    A stalled ``cancelling`` job becomes ``cancelled``. A stalled ``started`` job is
    re-enqueued while it has attempts left; the next attempt resumes after the last
    finished round. Otherwise it becomes ``failed``. Returns the job as it is afterwards,
    or None when nothing changed (another caller recovered it first, or it is not running).
    """
    job = store.get(job_id)
    if job is None or job.state not in RUNNING_STATES or job.rq_job_id != expected_rq_job_id:
        return None

    where = f"round {job.round}" if job.round is not None else "data loading"
    now = time.time()
    if job.state == RoundState.CANCELLING:
        message = f"{reason} during {where} after a cancel request; the job is cancelled"
        changed = store.update(
            job_id,
            from_states=[RoundState.CANCELLING],
            where={"rq_job_id": expected_rq_job_id},
            values={
                "state": RoundState.CANCELLED,
                "stage": "cancelled",
                "ended_at": repr(now),
                f"attempt_error:{job.attempts}": message,
            },
        )
    elif job.attempts < job.max_attempts:
        resume = _resume_round(job)
        next_rq_job_id = rq_job_id_for(job_id, job.attempts + 1)
        message = (
            f"{reason} during {where}; re-enqueued to resume from round {resume} "
            f"(attempt {job.attempts + 1} of {job.max_attempts})"
        )
        changed = store.update(
            job_id,
            from_states=[RoundState.STARTED],
            where={"rq_job_id": expected_rq_job_id},
            values={
                "state": RoundState.QUEUED,
                "stage": "queued",
                "rq_job_id": next_rq_job_id,
                f"attempt_error:{job.attempts}": message,
                "heartbeat_at": None,
                "worker_pid": None,
            },
        )
        if changed:
            # NOTE: if Redis fails between the state change and this call, the job stays
            # queued without an RQ job. Submitting the round job again is then the way out.
            enqueue_attempt(queue, job_id, next_rq_job_id, timeout_s=timeout_s)
    else:
        message = f"{reason} during {where}; failed after {job.attempts} attempt(s)"
        changed = store.update(
            job_id,
            from_states=[RoundState.STARTED],
            where={"rq_job_id": expected_rq_job_id},
            values={
                "state": RoundState.FAILED,
                "stage": "failed",
                "error": message,
                "ended_at": repr(now),
                f"attempt_error:{job.attempts}": message,
            },
        )
    if not changed:
        return None
    logger.warning("round job %s: attempt %s (%s): %s", job_id, job.attempts, expected_rq_job_id, message)
    return store.get(job_id)


def reap_stalled(store: RoundStore, queue: Queue, *, stale_after_s: float, timeout_s: int) -> list[str]:
    """Recover every running job without a heartbeat for ``stale_after_s`` seconds; return their ids."""
    reaped: list[str] = []
    now = time.time()
    for job_id in store.ids_in_state(*RUNNING_STATES):
        job = store.get(job_id)
        if job is None or job.rq_job_id is None:
            continue
        age = job.heartbeat_age(now)
        if age is None or age <= stale_after_s:
            continue
        recovered = recover_job(
            store,
            queue,
            job_id,
            expected_rq_job_id=job.rq_job_id,
            reason=f"worker stopped responding (no heartbeat for {age:.0f} s)",
            timeout_s=timeout_s,
        )
        if recovered is not None:
            reaped.append(job_id)
    return reaped


def _round_job_id(rq_job: Job) -> str | None:
    """Return the round job id an RQ job runs, or None for a job that is not ours."""
    if rq_job.func_name != JOB_FUNCTION or not rq_job.args:
        return None
    return str(rq_job.args[0])


def _timeout_of(rq_job: Job) -> int:
    return int(rq_job.timeout) if rq_job.timeout and rq_job.timeout > 0 else RQ_RECORD_TTL_S


def _store_for(connection: Redis) -> RoundStore:
    """Open the store on the server and database of an RQ connection, decoding replies."""
    pool = connection.connection_pool
    kwargs: dict[str, Any] = dict(pool.connection_kwargs)
    kwargs["decode_responses"] = True
    return RoundStore(Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class, **kwargs)))


def on_rq_failure(rq_job: Job, connection: Redis, exc_type: Any = None, exc_value: Any = None, traceback: Any = None) -> None:
    """Bring the store in line when RQ fails an attempt, such as an abandoned one.

    RQ calls this from its StartedJobRegistry clean-up when a worker vanished, and in the
    work horse when the job function raised (the store already records ``failed`` then).
    """
    job_id = _round_job_id(rq_job)
    if job_id is None:
        return
    recovered = recover_job(
        _store_for(connection),
        Queue(rq_job.origin, connection=connection),
        job_id,
        expected_rq_job_id=rq_job.id,
        reason=f"RQ marked the attempt failed ({getattr(exc_type, '__name__', 'abandoned job')})",
        timeout_s=_timeout_of(rq_job),
    )
    if recovered is None:
        logger.debug("round job %s: RQ failure of %s needed no change", job_id, rq_job.id)


def on_work_horse_killed(rq_job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
    """Recover the attempt whose work horse died; RQ calls this in the worker's parent process."""
    job_id = _round_job_id(rq_job)
    if job_id is None:
        return
    if ret_val and os.WIFSIGNALED(ret_val):
        exit_description = f"killed by signal {os.WTERMSIG(ret_val)}"
    elif ret_val and os.WIFEXITED(ret_val):
        exit_description = f"exited with status {os.WEXITSTATUS(ret_val)}"
    else:
        exit_description = f"exited (wait status {ret_val})"
    recover_job(
        _store_for(rq_job.connection),
        Queue(rq_job.origin, connection=rq_job.connection),
        job_id,
        expected_rq_job_id=rq_job.id,
        reason=f"work horse {retpid} {exit_description}",
        timeout_s=_timeout_of(rq_job),
    )
