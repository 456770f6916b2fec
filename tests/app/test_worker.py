"""Tests of a real ``rsir worker`` process running round jobs posted through the API.

One worker serves the whole module, and Redis database 14 is flushed per module rather
than per test, because flushing under a live worker would delete its registration.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from rsir_engine.registry import ModelRegistry

from app.core.config import Settings
from app.core.store import RoundStore
from app.main import create_app

# Upper bound on any wait for the worker; a tiny round takes about 10 s on two CPU cores.
JOB_TIMEOUT_S = 120.0
RAW_ITEMS = set(range(101, 141))  # item ids of write_round_interactions
RAW_USERS = {f"u{user}" for user in range(60)}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, rounds_helpers: SimpleNamespace) -> Settings:
    """Settings shared by the module's app and worker, with every folder in one tmp folder."""
    return rounds_helpers.rounds_settings(tmp_path_factory.mktemp("worker"))


@pytest.fixture(scope="module")
def worker(settings: Settings, rounds_redis_module: redis.Redis, rounds_helpers: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """Run one ``rsir worker`` for the module."""
    process = rounds_helpers.WorkerProcess(settings, Path(settings.runs_dir).parent / "worker.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(settings: Settings, worker: SimpleNamespace) -> Iterator[TestClient]:
    """A client of the app, on the same Redis database and folders as the worker."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def dataset_id(api: TestClient, settings: Settings, rounds_helpers: SimpleNamespace) -> str:
    """Upload 60 users x 12 items over items 101..140 and return the dataset id."""
    csv_path = rounds_helpers.write_round_interactions(Path(settings.runs_dir).parent / "clicks.csv")
    with open(csv_path, "rb") as handle:
        response = api.post("/datasets", files={"file": ("clicks.csv", handle)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_for_job(api: TestClient, job_id: str, done: Callable[[dict], bool], worker: SimpleNamespace) -> dict:
    """Poll GET /rounds/{id} until ``done`` holds; fail with the worker log after JOB_TIMEOUT_S."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        response = api.get(f"/rounds/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if done(job):
            return job
        time.sleep(0.1)
    pytest.fail(f"round job {job_id} did not get there within {JOB_TIMEOUT_S} s: {job}\n--- worker log ---\n{worker.log()[-4000:]}")


def ended(job: dict) -> bool:
    return job["state"] in ("finished", "failed", "cancelled")


@pytest.fixture(scope="module")
def finished_job(api: TestClient, dataset_id: str, worker: SimpleNamespace, rounds_helpers: SimpleNamespace) -> dict:
    """Run one tiny round to the end and return the job."""
    response = api.post("/rounds", json=rounds_helpers.tiny_round_body(dataset_id))
    assert response.status_code == 202, response.text
    return wait_for_job(api, response.json()["id"], ended, worker)


def start_long_job(api: TestClient, dataset_id: str, worker: SimpleNamespace, rounds_helpers: SimpleNamespace) -> dict:
    """Start a job that trains for minutes and return it once it is training."""
    body = rounds_helpers.tiny_round_body(dataset_id, rounds=3, training={"max_epochs": 500, "patience": 500, "batch_size": 16})
    job_id = api.post("/rounds", json=body).json()["id"]
    return wait_for_job(api, job_id, lambda job: job["stage"] == "training" or ended(job), worker)


def test_worker_runs_round_job_to_finish(finished_job: dict) -> None:
    assert finished_job["state"] == "finished"
    assert finished_job["progress"] == 1.0
    assert finished_job["attempts"] == 1
    assert [row["round"] for row in finished_job["results"]] == [0, 1]
    assert len(finished_job["versions"]) == 2
    assert finished_job["results"][1]["synthetic_sequences"] > 0
    assert "ndcg@10" in finished_job["results"][1]["valid"]


def test_worker_promotes_first_version_to_champion(finished_job: dict, api: TestClient, settings: Settings) -> None:
    champion = api.get("/models").json()["aliases"]["champion"]
    history = ModelRegistry(settings.checkpoint_dir).alias_history("champion")

    assert finished_job["promoted_versions"][0] == finished_job["versions"][0]
    assert champion == finished_job["promoted_versions"][-1]
    assert history[0].actor == f"job {finished_job['id']}"
    assert "no champion yet" in history[0].reason


def test_worker_records_lineage_in_registry(finished_job: dict, api: TestClient) -> None:
    base, successor = finished_job["versions"]

    response = api.get(f"/models/{successor}")

    assert response.status_code == 200
    assert response.json()["parent_version"] == base
    assert response.json()["round"] == 1


def test_round_data_jsonl_has_raw_ids_and_fidelity(finished_job: dict, api: TestClient) -> None:
    response = api.get(f"/rounds/{finished_job['id']}/data", params={"round": 1, "format": "jsonl"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in response.text.splitlines()]
    assert len(records) == finished_job["results"][1]["augmentation"]["kept"]
    assert {item for record in records for item in record["items"]} <= RAW_ITEMS
    assert {record["seed_user"] for record in records} <= RAW_USERS
    assert all(record["user_id"].startswith("rsir_r1_u") for record in records)
    steps = [step for record in records for step in record["steps"]]
    assert steps
    assert all({"step", "best_rank", "passed", "item"} <= set(step) for step in steps)
    assert {step["item"] for step in steps if step["item"] is not None} <= RAW_ITEMS
    assert {record["stop_reason"] for record in records} <= {"fidelity", "exhausted", "pool_empty", "max_len"}


def test_round_data_inter_is_recbole_file(finished_job: dict, api: TestClient) -> None:
    response = api.get(f"/rounds/{finished_job['id']}/data", params={"round": 1, "format": "inter"})

    assert response.status_code == 200
    lines = response.text.splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    rows = [line.split("\t") for line in lines[1:]]
    assert {int(item) for _, item, _ in rows} <= RAW_ITEMS
    assert all(user.startswith("rsir_r1_u") for user, _, _ in rows)
    assert rows[0][2] == "0"
    assert "attachment" in response.headers["content-disposition"]


def test_round_data_parquet_matches_inter(finished_job: dict, api: TestClient) -> None:
    url = f"/rounds/{finished_job['id']}/data"
    inter = api.get(url, params={"round": 1, "format": "inter"}).text.splitlines()[1:]

    response = api.get(url, params={"round": 1, "format": "parquet"})

    assert response.status_code == 200
    frame = pd.read_parquet(io.BytesIO(response.content))
    assert list(frame.columns) == ["user_id", "item_id", "timestamp", "seed_user"]
    assert len(frame) == len(inter)
    assert set(frame["item_id"]) <= RAW_ITEMS
    assert set(frame["seed_user"]) <= RAW_USERS
    first_user, first_item, _ = inter[0].split("\t")
    assert (frame.loc[0, "user_id"], int(frame.loc[0, "item_id"])) == (first_user, int(first_item))


def test_worker_parent_never_imports_torch(api: TestClient, dataset_id: str, worker: SimpleNamespace, rounds_helpers: SimpleNamespace, rounds_redis_module: redis.Redis) -> None:
    job = start_long_job(api, dataset_id, worker, rounds_helpers)
    horse_pid = RoundStore(rounds_redis_module).get(job["id"]).worker_pid

    parent_maps = Path(f"/proc/{worker.pid}/maps").read_text()
    horse_maps = Path(f"/proc/{horse_pid}/maps").read_text()
    api.delete(f"/rounds/{job['id']}")
    wait_for_job(api, job["id"], ended, worker)

    assert job["state"] == "started"
    assert horse_pid != worker.pid
    assert "libtorch" in horse_maps
    assert "libtorch" not in parent_maps


def test_delete_running_round_stops_at_safe_point(api: TestClient, dataset_id: str, worker: SimpleNamespace, rounds_helpers: SimpleNamespace) -> None:
    job = start_long_job(api, dataset_id, worker, rounds_helpers)

    response = api.delete(f"/rounds/{job['id']}")
    final = wait_for_job(api, job["id"], ended, worker)

    assert response.status_code == 202
    assert response.json()["state"] == "cancelling"
    assert "next safe point" in response.json()["message"]
    assert final["state"] == "cancelled"
    assert final["ended_at"] is not None
    assert api.delete(f"/rounds/{job['id']}").status_code == 409


def test_round_jobs_survive_in_store_without_expiry(finished_job: dict, rounds_redis_module: redis.Redis) -> None:
    keys = [f"rsir:rounds:{finished_job['id']}", "rsir:rounds:index", "rsir:rounds:state:finished"]

    assert [rounds_redis_module.ttl(key) for key in keys] == [-1, -1, -1]
