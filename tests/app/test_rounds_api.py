"""Tests of the /rounds routes without a worker: creation, idempotency, paging, cancel, errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job, JobStatus

from app.core.config import Settings
from app.core.store import RoundState, RoundStore
from app.main import create_app


@pytest.fixture
def settings(tmp_path: Path, rounds_helpers: SimpleNamespace) -> Settings:
    """Settings with every folder under the test's tmp_path and Redis database 14."""
    return rounds_helpers.rounds_settings(tmp_path)


@pytest.fixture
def api(settings: Settings, make_client: Callable[[Settings], TestClient]) -> TestClient:
    """A client of an app without an API key."""
    return make_client(settings)


@pytest.fixture
def store(rounds_redis: redis.Redis) -> RoundStore:
    """The round-job store the app writes to."""
    return RoundStore(rounds_redis)


@pytest.fixture
def queue(rounds_redis: redis.Redis, settings: Settings) -> Queue:
    """The RQ queue the app puts round jobs on."""
    return Queue(settings.queue_name, connection=redis.Redis.from_url(settings.redis_url))


@pytest.fixture
def body(rounds_helpers: SimpleNamespace) -> dict:
    """A valid POST /rounds body on the named dataset ml-100k (no worker runs it here)."""
    return rounds_helpers.tiny_round_body("ml-100k")


def test_create_round_returns_202_with_location(api: TestClient, body: dict, queue: Queue) -> None:
    response = api.post("/rounds", json=body)

    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/rounds/{job['id']}"
    assert job["state"] == "queued"
    assert job["rounds"] == 1
    assert job["request"]["model"]["hidden_size"] == 16
    assert queue.job_ids == [f"{job['id']}-1"]


def test_create_round_accepts_uploaded_dataset(api: TestClient, rounds_helpers: SimpleNamespace, tmp_path: Path) -> None:
    csv_path = rounds_helpers.write_round_interactions(tmp_path / "clicks.csv")
    with open(csv_path, "rb") as handle:
        dataset_id = api.post("/datasets", files={"file": ("clicks.csv", handle)}).json()["id"]

    response = api.post("/rounds", json=rounds_helpers.tiny_round_body(dataset_id))

    assert response.status_code == 202
    assert response.json()["dataset"] == dataset_id


def test_create_round_idempotency_key_returns_same_job(api: TestClient, body: dict, queue: Queue) -> None:
    first = api.post("/rounds", json={**body, "idempotency_key": "nightly-2026-03-01"})
    again = api.post("/rounds", json={**body, "idempotency_key": "nightly-2026-03-01"})
    by_header = api.post("/rounds", json=body, headers={"Idempotency-Key": "nightly-2026-03-01"})

    assert first.status_code == 202
    assert again.status_code == 200
    assert by_header.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert by_header.json()["id"] == first.json()["id"]
    assert again.headers["location"] == f"/rounds/{first.json()['id']}"
    assert len(queue.job_ids) == 1


def test_create_round_reused_key_conflict(api: TestClient, body: dict) -> None:
    first = api.post("/rounds", json=body, headers={"Idempotency-Key": "key-1"})

    response = api.post("/rounds", json={**body, "rounds": 2}, headers={"Idempotency-Key": "key-1"})

    assert response.status_code == 409
    assert first.json()["id"] in response.json()["detail"]["message"]


def test_create_round_conflicting_keys_is_422(api: TestClient, body: dict) -> None:
    response = api.post("/rounds", json={**body, "idempotency_key": "a"}, headers={"Idempotency-Key": "b"})

    assert response.status_code == 422
    assert "differs" in str(response.json()["detail"])


def test_create_round_unknown_dataset_lists_valid_ones(api: TestClient, body: dict) -> None:
    response = api.post("/rounds", json={**body, "dataset": "ml-20m"})

    assert response.status_code == 422
    issue = response.json()["detail"][0]
    assert issue["loc"] == ["body", "dataset"]
    assert "'ml-20m'" in issue["msg"]
    assert "ml-100k, ml-1m" in issue["msg"]


@pytest.mark.parametrize(
    ("changes", "bad_field"),
    [
        ({"rounds": 0}, "rounds"),
        ({"rounds": 11}, "rounds"),
        ({"architecture": "gru4rec"}, "architecture"),
        ({"generation": {"m": 0}}, "m"),
        ({"generation": {"tau": 0}}, "tau"),
        ({"generation": {"p": 1.5}}, "p"),
        ({"generation": {"temperature": 0}}, "temperature"),
        ({"training": {"learning_rate": 0}}, "learning_rate"),
        ({"training": {"max_epochs": 0}}, "max_epochs"),
        ({"model": {"dropout": 1.0}}, "dropout"),
        ({"seed_from": "pseudo"}, "seed_from"),
        ({"colour": "red"}, "colour"),
        ({"idempotency_key": "has space"}, "idempotency_key"),
    ],
)
def test_create_round_invalid_field_is_422(api: TestClient, body: dict, changes: dict, bad_field: str) -> None:
    response = api.post("/rounds", json={**body, **changes})

    assert response.status_code == 422
    assert bad_field in {str(part) for issue in response.json()["detail"] for part in issue["loc"]}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"model": {"hidden_size": 16, "num_heads": 3}}, "multiple of num_heads"),
        ({"generation": {"max_len": 4, "min_len": 5}}, "min_len 5 exceeds max_len 4"),
    ],
)
def test_create_round_inconsistent_parameters_is_422(api: TestClient, body: dict, changes: dict, expected: str, queue: Queue) -> None:
    response = api.post("/rounds", json={**body, **changes})

    assert response.status_code == 422
    assert expected in response.json()["detail"]["message"]
    assert queue.job_ids == []


def test_list_rounds_pages_newest_first(api: TestClient, body: dict) -> None:
    ids = []
    for _ in range(3):
        ids.append(api.post("/rounds", json=body).json()["id"])
        time.sleep(0.002)  # distinct creation times

    first_page = api.get("/rounds", params={"limit": 2}).json()
    second_page = api.get("/rounds", params={"offset": 2, "limit": 2}).json()

    assert [job["id"] for job in first_page["data"]] == [ids[2], ids[1]]
    assert [job["id"] for job in second_page["data"]] == [ids[0]]
    assert first_page["count"] == 3
    assert second_page["count"] == 3


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}])
def test_list_rounds_bad_paging_is_422(api: TestClient, params: dict) -> None:
    assert api.get("/rounds", params=params).status_code == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/rounds/0123456789abcdef"),
        ("DELETE", "/rounds/0123456789abcdef"),
        ("GET", "/rounds/0123456789abcdef/data?round=1"),
    ],
)
def test_unknown_round_job_is_404(api: TestClient, method: str, path: str) -> None:
    response = api.request(method, path)

    assert response.status_code == 404
    assert "0123456789abcdef" in response.json()["detail"]["message"]


def test_delete_queued_round_cancels_it(api: TestClient, body: dict, queue: Queue) -> None:
    job_id = api.post("/rounds", json=body).json()["id"]

    response = api.delete(f"/rounds/{job_id}")

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert response.json()["ended_at"] is not None
    assert queue.job_ids == []
    assert Job.fetch(f"{job_id}-1", connection=queue.connection).get_status() == JobStatus.CANCELED
    assert api.get(f"/rounds/{job_id}").json()["state"] == "cancelled"


def test_delete_ended_round_is_409(api: TestClient, body: dict) -> None:
    job_id = api.post("/rounds", json=body).json()["id"]
    api.delete(f"/rounds/{job_id}")

    response = api.delete(f"/rounds/{job_id}")

    assert response.status_code == 409
    assert "already cancelled" in response.json()["detail"]["message"]


@pytest.mark.parametrize(
    ("params", "status", "expected"),
    [
        ({"round": 1}, 404, "has no data yet"),
        ({"round": 2}, 404, "runs rounds 1..1"),
        ({"round": 0}, 422, "round"),
        ({"round": 1, "format": "csv"}, 422, "format"),
        ({}, 422, "round"),
    ],
)
def test_round_data_errors(api: TestClient, body: dict, params: dict, status: int, expected: str) -> None:
    job_id = api.post("/rounds", json=body).json()["id"]

    response = api.get(f"/rounds/{job_id}/data", params=params)

    assert response.status_code == status
    assert expected in str(response.json()["detail"])


def test_get_round_recovers_job_of_silent_worker(api: TestClient, body: dict, store: RoundStore, queue: Queue) -> None:
    job_id = api.post("/rounds", json=body).json()["id"]
    queue.empty()
    store.update(
        job_id,
        values={"state": RoundState.STARTED, "stage": "training", "round": 1, "attempts": 1, "heartbeat_at": time.time() - 60},
    )

    job = api.get(f"/rounds/{job_id}").json()

    assert job["state"] == "queued"
    assert job["attempt_errors"][0]["attempt"] == 1
    assert "worker stopped responding" in job["attempt_errors"][0]["message"]
    assert "resume from round 0 (attempt 2 of 3)" in job["attempt_errors"][0]["message"]
    assert queue.job_ids == [f"{job_id}-2"]


def test_round_jobs_gauge_counts_states(api: TestClient, body: dict) -> None:
    api.post("/rounds", json=body)
    cancelled = api.post("/rounds", json=body).json()["id"]
    api.delete(f"/rounds/{cancelled}")

    metrics = api.get("/metrics").text

    assert 'rsir_round_jobs{state="queued"} 1.0' in metrics
    assert 'rsir_round_jobs{state="cancelled"} 1.0' in metrics
    assert 'rsir_round_jobs{state="started"} 0.0' in metrics


def test_rounds_require_api_key_when_set(settings: Settings, make_client: Callable[[Settings], TestClient], body: dict) -> None:
    guarded = make_client(settings.model_copy(update={"api_key": "secret"}))

    without = guarded.post("/rounds", json=body)
    wrong = guarded.post("/rounds", json=body, headers={"X-API-Key": "guess"})
    created = guarded.post("/rounds", json=body, headers={"X-API-Key": "secret"})
    job_id = created.json()["id"]
    delete_without = guarded.delete(f"/rounds/{job_id}")
    delete_with = guarded.delete(f"/rounds/{job_id}", headers={"X-API-Key": "secret"})

    assert without.status_code == 401
    assert wrong.status_code == 401
    assert created.status_code == 202
    assert delete_without.status_code == 401
    assert delete_with.status_code == 200
    assert guarded.get(f"/rounds/{job_id}").status_code == 200
    assert guarded.get("/rounds").status_code == 200


def test_rounds_without_redis_is_503(settings: Settings, body: dict) -> None:
    offline = settings.model_copy(update={"redis_url": "redis://127.0.0.1:6390/14", "redis_timeout_s": 0.5})
    with TestClient(create_app(offline)) as test_client:
        created = test_client.post("/rounds", json=body)
        listed = test_client.get("/rounds")

    assert created.status_code == 503
    assert listed.status_code == 503
    assert "Redis" in created.json()["detail"]["message"]
