"""Tests of round jobs whose worker dies: the reaper, RQ's abandoned-job clean-up, kill -9.

A job must end finished (resumed after its last finished round) or failed, never stay
``started``, and never publish one (job, round) twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from app.core.config import Settings
from app.core.store import RoundJob, RoundState, RoundStore
from app.main import create_app
from app.worker.dispatch import enqueue_attempt, reap_stalled, rq_job_id_for

# Upper bound on any wait for a worker; the kill tests take about 15 s each on two CPU cores.
JOB_TIMEOUT_S = 120.0
STALE_AFTER_S = 3.0


@pytest.fixture
def settings(tmp_path: Path, rounds_helpers: SimpleNamespace) -> Settings:
    """Settings with every folder under tmp_path; a silent worker is stale after 3 s."""
    return rounds_helpers.rounds_settings(tmp_path, stale_after_s=STALE_AFTER_S)


@pytest.fixture
def store(rounds_redis: redis.Redis) -> RoundStore:
    """The round-job store on database 14, flushed around the test."""
    return RoundStore(rounds_redis)


@pytest.fixture
def queue(rounds_redis: redis.Redis, settings: Settings) -> Queue:
    """The rounds queue, on a client that does not decode replies, as RQ requires."""
    return Queue(settings.queue_name, connection=redis.Redis.from_url(settings.redis_url))


def stalled_job(store: RoundStore, queue: Queue, *, attempts: int, max_attempts: int = 3, state: RoundState = RoundState.STARTED) -> RoundJob:
    """Create a job whose worker started it and then sent no heartbeat for a minute."""
    job, _ = store.create({"dataset": "ml-100k", "rounds": 2}, max_attempts=max_attempts)
    rq_job_id = rq_job_id_for(job.id, attempts)
    store.update(
        job.id,
        values={
            "state": state,
            "stage": "training",
            "round": 1,
            "attempts": attempts,
            "rq_job_id": rq_job_id,
            "heartbeat_at": time.time() - 60,
            "row:0": {"round": 0, "version": 1},
        },
    )
    return store.get(job.id)


def reap(store: RoundStore, queue: Queue) -> list[str]:
    return reap_stalled(store, queue, stale_after_s=STALE_AFTER_S, timeout_s=600)


def test_reap_stalled_requeues_job_with_attempts_left(store: RoundStore, queue: Queue) -> None:
    job = stalled_job(store, queue, attempts=1)

    reaped = reap(store, queue)
    after = store.get(job.id)

    assert reaped == [job.id]
    assert after.state == RoundState.QUEUED
    assert after.rq_job_id == rq_job_id_for(job.id, 2)
    assert queue.job_ids == [rq_job_id_for(job.id, 2)]
    assert after.attempt_errors[1].startswith("worker stopped responding")
    assert "during round 1; re-enqueued to resume from round 1 (attempt 2 of 3)" in after.attempt_errors[1]


def test_reap_stalled_fails_job_after_max_attempts(store: RoundStore, queue: Queue) -> None:
    job = stalled_job(store, queue, attempts=3)

    reap(store, queue)
    after = store.get(job.id)

    assert after.state == RoundState.FAILED
    assert "during round 1; failed after 3 attempt(s)" in after.error
    assert after.ended_at is not None
    assert queue.job_ids == []


def test_reap_stalled_finishes_cancelling_job_as_cancelled(store: RoundStore, queue: Queue) -> None:
    job = stalled_job(store, queue, attempts=1, state=RoundState.CANCELLING)

    reap(store, queue)

    assert store.get(job.id).state == RoundState.CANCELLED
    assert queue.job_ids == []


def test_reap_stalled_leaves_live_job_alone(store: RoundStore, queue: Queue) -> None:
    job = stalled_job(store, queue, attempts=1)
    store.heartbeat(job.id, rq_job_id=job.rq_job_id)

    reaped = reap(store, queue)

    assert reaped == []
    assert store.get(job.id).state == RoundState.STARTED


def test_reap_stalled_twice_requeues_once(store: RoundStore, queue: Queue) -> None:
    job = stalled_job(store, queue, attempts=1)

    reap(store, queue)
    reap(store, queue)

    assert queue.job_ids == [rq_job_id_for(job.id, 2)]


def test_stale_attempt_cannot_write_after_reaping(store: RoundStore, queue: Queue) -> None:
    job = stalled_job(store, queue, attempts=1)
    reap(store, queue)

    owned = store.heartbeat(job.id, rq_job_id=rq_job_id_for(job.id, 1))
    recorded = store.record_round(job.id, {"round": 1, "version": 9}, rq_job_id=rq_job_id_for(job.id, 1))

    assert owned is False
    assert recorded is False
    assert 1 not in store.get(job.id).rows


def test_rq_abandoned_job_cleanup_requeues_round_job(store: RoundStore, queue: Queue) -> None:
    job = stalled_job(store, queue, attempts=1)
    rq_job = enqueue_attempt(queue, job.id, job.rq_job_id, timeout_s=600)
    queue.remove(rq_job)
    rq_job.set_status(JobStatus.STARTED)
    started = StartedJobRegistry(queue=queue)
    # The entry of a worker that stopped renewing it: RQ's key is "<job id>:<execution id>".
    queue.connection.zadd(started.key, {f"{rq_job.id}:lost-execution": time.time() - 10})

    started.cleanup()
    after = store.get(job.id)

    assert rq_job.id in FailedJobRegistry(queue=queue).get_job_ids()
    assert after.state == RoundState.QUEUED
    assert "RQ marked the attempt failed (AbandonedJobError)" in after.attempt_errors[1]
    assert queue.job_ids == [rq_job_id_for(job.id, 2)]


# ----- real workers -----------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], description: str, logs: Callable[[], str], timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Poll ``condition`` every 20 ms; fail with the worker logs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout_s} s waiting for {description}\n--- worker logs ---\n{logs()[-6000:]}")


def process_gone(pid: int) -> bool:
    """Return whether ``pid`` has exited (a zombie counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def publish_keys(settings: Settings) -> list[str]:
    """Return the publish key of every version in the registry."""
    manifests = Path(settings.checkpoint_dir).glob("versions/*/manifest.json")
    return sorted(json.loads(path.read_text())["publish_key"] for path in manifests)


@pytest.fixture
def uploaded_dataset(settings: Settings, rounds_redis: redis.Redis, rounds_helpers: SimpleNamespace, tmp_path: Path) -> str:
    """Upload the small interaction file and return its dataset id."""
    csv_path = rounds_helpers.write_round_interactions(tmp_path / "clicks.csv")
    with TestClient(create_app(settings)) as api, open(csv_path, "rb") as handle:
        return api.post("/datasets", files={"file": ("clicks.csv", handle)}).json()["id"]


def start_two_round_job(settings: Settings, dataset_id: str, rounds_helpers: SimpleNamespace) -> str:
    """Post a job whose round 1 trains for several seconds, long enough to kill it mid-round."""
    # 100 epochs of batch 8 take about 5 s on an idle 2-core CPU, ten heartbeat intervals,
    # so the kill lands inside round 1 however fast the machine is.
    body = rounds_helpers.tiny_round_body(dataset_id, training={"max_epochs": 100, "patience": 100, "batch_size": 8})
    with TestClient(create_app(settings)) as api:
        response = api.post("/rounds", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_worker_killed_mid_round_job_resumes(
    settings: Settings, store: RoundStore, uploaded_dataset: str, start_worker: Callable, rounds_helpers: SimpleNamespace
) -> None:
    first = start_worker(settings)
    job_id = start_two_round_job(settings, uploaded_dataset, rounds_helpers)
    wait_for(lambda: (store.get(job_id).stage, store.get(job_id).round) == ("training", 1), "round 1 training", first.log)
    horse_pid = store.get(job_id).worker_pid

    first.kill()
    wait_for(lambda: process_gone(horse_pid), "the orphaned work horse to exit", first.log, timeout_s=10)
    second = start_worker(settings)
    logs = lambda: first.log() + "\n--- second worker ---\n" + second.log()  # noqa: E731
    wait_for(lambda: store.get(job_id).state in (RoundState.FINISHED, RoundState.FAILED), "the job to end", logs)
    job = store.get(job_id)

    assert job.state == RoundState.FINISHED
    assert job.attempts == 2
    assert "worker stopped responding" in job.attempt_errors[1]
    assert "resume from round 1" in job.attempt_errors[1]
    assert sorted(job.rows) == [0, 1]
    assert publish_keys(settings) == [f"{job_id}:round0", f"{job_id}:round1"]
    assert "resumed" in second.log()


def test_work_horse_killed_job_retried_by_same_worker(
    settings: Settings, store: RoundStore, uploaded_dataset: str, start_worker: Callable, rounds_helpers: SimpleNamespace
) -> None:
    worker = start_worker(settings)
    job_id = start_two_round_job(settings, uploaded_dataset, rounds_helpers)
    wait_for(lambda: (store.get(job_id).stage, store.get(job_id).round) == ("training", 1), "round 1 training", worker.log)

    os.kill(store.get(job_id).worker_pid, 9)
    wait_for(lambda: store.get(job_id).state in (RoundState.FINISHED, RoundState.FAILED), "the job to end", worker.log)
    job = store.get(job_id)

    assert job.state == RoundState.FINISHED
    assert job.attempts == 2
    assert "killed by signal 9 during round 1" in job.attempt_errors[1]
    assert publish_keys(settings) == [f"{job_id}:round0", f"{job_id}:round1"]
