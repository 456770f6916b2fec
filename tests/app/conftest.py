"""Shared fixtures of the service tests: Redis, a tiny trained registry, apps and clients.

The models are tiny SASRecs trained in seconds on the CPU on a synthetic interaction
file whose item ids are 1..400, so the MovieLens ids used in the schema examples
(50, 172, 133, ...) exist in the catalogue. Redis tests use database 13 and flush it
before and after each test. Model events go over pub/sub, which ignores the database
number, so listeners check the registry before they swap.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

# Tests never train a champion on ML-100K by accident; a test that wants bootstrapping
# passes its own Settings.
os.environ["RSIR_BOOTSTRAP_CHAMPION"] = "false"

from app.core.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from rsir_engine.architectures import SASRecConfig  # noqa: E402
from rsir_engine.checkpoint import MANIFEST_FILE, WEIGHTS_FILE  # noqa: E402
from rsir_engine.data import build_dataset, load_interactions  # noqa: E402
from rsir_engine.generation import GenerationConfig  # noqa: E402
from rsir_engine.registry import ModelRegistry  # noqa: E402
from rsir_engine.rounds import RoundConfig, run_rounds  # noqa: E402
from rsir_engine.training import TrainConfig  # noqa: E402

TEST_REDIS_URL = "redis://127.0.0.1:6379/13"
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:6390/0"  # nothing listens on 6390
API_KEY = "test-key"

CATALOGUE_SIZE = 400
SYNTHETIC_USERS = 300
MODEL_MAX_LEN = 20


# ----- Redis ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_available() -> bool:
    """Whether the test Redis server responds to PING."""
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_available: bool) -> Iterator[redis.Redis]:
    """Return a client on database 13, flushed before and after the test."""
    if not redis_available:
        pytest.skip(f"no Redis server answers at {TEST_REDIS_URL}; start redis-server to run this test")
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


# ----- trained models ------------------------------------------------------------------


def write_synthetic_interactions(path: Path, *, seed: int = 7) -> Path:
    """Write a CSV of users who walk the catalogue in small steps, so a model can learn the next item.

    Every item id 1..CATALOGUE_SIZE appears at least once.
    """
    rng = random.Random(seed)
    rows = ["user_id,item_id,timestamp"]
    seen: set[int] = set()
    for user in range(SYNTHETIC_USERS):
        item = rng.randint(1, CATALOGUE_SIZE)
        length = rng.randint(8, 24)
        for step in range(length):
            rows.append(f"{user},{item},{1_700_000_000 + 60 * step}")
            seen.add(item)
            item = (item + rng.choice((1, 1, 2, 3)) - 1) % CATALOGUE_SIZE + 1
    missing = sorted(set(range(1, CATALOGUE_SIZE + 1)) - seen)
    rows.extend(f"filler,{item},{1_700_000_000 + 60 * step}" for step, item in enumerate(missing))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def interactions_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write the synthetic interaction file once per session (columns user_id, item_id, timestamp)."""
    return write_synthetic_interactions(tmp_path_factory.mktemp("data") / "interactions.csv")


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory, interactions_csv: Path) -> Path:
    """Train round 0 (version 1) and round 1 (version 2) once per session; champion = version 1.

    Tests must not change this folder; ``registry_dir`` gives each test its own copy.
    """
    root = tmp_path_factory.mktemp("trained")
    dataset = build_dataset(load_interactions(interactions_csv), name="synthetic-walks")
    config = RoundConfig(
        rounds=1,
        model=SASRecConfig(num_items=1, max_len=MODEL_MAX_LEN, hidden_size=16, num_layers=1, num_heads=1, inner_size=32, dropout=0.1),
        generation=GenerationConfig(m=2, tau=50),
        train=TrainConfig(max_epochs=4, patience=2, batch_size=64, learning_rate=5e-3),
        device="cpu",
    )
    registry = ModelRegistry(root / "models")
    result = run_rounds(dataset, config, registry=registry, run_id="test-run")
    assert [row.version for row in result.rounds] == [1, 2]
    registry.set_alias("champion", 1, reason="test fixture", actor="pytest")
    return root / "models"


@pytest.fixture
def registry_dir(trained_registry: Path, tmp_path: Path) -> Path:
    """Return a fresh copy of the trained registry that the test may change."""
    target = tmp_path / "models"
    shutil.copytree(trained_registry, target)
    return target


@pytest.fixture
def registry(registry_dir: Path) -> ModelRegistry:
    """Open the test's registry copy."""
    return ModelRegistry(registry_dir)


def _truncate_weights(registry: ModelRegistry, version: int) -> None:
    """Cut a version's weights file in half, as an interrupted copy would."""
    path = registry.get(version).path / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_item_map(registry: ModelRegistry, version: int) -> None:
    """Swap two raw ids in a version's manifest without updating its hash."""
    path = registry.get(version).path / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["item_ids"][0], manifest["item_ids"][1] = manifest["item_ids"][1], manifest["item_ids"][0]
    path.write_text(json.dumps(manifest))


CHECKPOINT_DAMAGE: dict[str, Callable[[ModelRegistry, int], None]] = {
    "truncated-weights": _truncate_weights,
    "edited-item-map": _edit_item_map,
}


@pytest.fixture
def broken_version(registry: ModelRegistry) -> Callable[[str], int]:
    """Return a function that publishes a copy of version 1, damages it and returns its number.

    Its argument names the damage: ``truncated-weights`` or ``edited-item-map``.
    """

    def publish_broken(damage: str) -> int:
        weights, manifest = registry.load(1)
        for key in ("version", "publish_key", "created_at", "item_map_sha256", "format_version"):
            manifest.pop(key, None)
        version = registry.publish(weights, manifest).version
        CHECKPOINT_DAMAGE[damage](registry, version)
        return version

    return publish_broken


# ----- apps and clients ----------------------------------------------------------------


def make_settings(registry_dir: Path, **changes: object) -> Settings:
    """Build service settings for tests: CPU, Redis database 13, no bootstrap, no .env file."""
    values: dict[str, object] = {
        "redis_url": TEST_REDIS_URL,
        "checkpoint_dir": registry_dir,
        "device": "cpu",
        "bootstrap_champion": False,
        "api_key": None,
    }
    values.update(changes)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    """Return ``make_settings(registry_dir, **changes)`` for tests that need other settings."""
    return make_settings


@pytest.fixture
def app_settings(registry_dir: Path) -> Settings:
    """Settings of the test app, pointing at the test's registry copy."""
    return make_settings(registry_dir)


@pytest.fixture
def app(app_settings: Settings) -> FastAPI:
    """Build the app (start-up runs when a client enters it)."""
    return create_app(app_settings)


@pytest.fixture
def client(app: FastAPI, redis_client: redis.Redis) -> Iterator[TestClient]:
    """Start the app with Redis available and return a client for it."""
    with TestClient(app) as test_client:
        yield test_client


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(app: FastAPI, *, timeout_s: float = 20.0) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free local port in a thread and yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port} within {timeout_s} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


@pytest.fixture
def live_server() -> Callable[[FastAPI], object]:
    """Return ``running_server``, a context manager that serves an app over real HTTP."""
    return running_server


def wait_for(condition: Callable[[], bool], *, timeout_s: float = 10.0, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until it is true or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


@pytest.fixture
def wait_until() -> Callable[..., bool]:
    """Return ``wait_for(condition, timeout_s=10.0)``, which polls until a condition holds."""
    return wait_for


# ===== Round jobs, workers and dataset uploads (Redis database 14) =======================
# This section belongs to the rounds, worker and datasets tests. Their jobs, RQ queue and
# worker heartbeats live in database 14, so they never meet the database-13 fixtures above.

ROUNDS_REDIS_URL = "redis://127.0.0.1:6379/14"
# Short enough that a killed worker is noticed within seconds; see rounds_settings.
ROUNDS_TIMING = {"heartbeat_interval_s": 0.5, "stale_after_s": 3.0, "reaper_interval_s": 1.0}
TINY_MODEL = {"max_len": 8, "hidden_size": 16, "num_layers": 1, "num_heads": 1, "inner_size": 32}


def write_round_interactions(path: Path, *, users: int = 60, per_user: int = 12, catalogue: int = 40, seed: int = 3) -> Path:
    """Write a CSV of ``users`` users with ``per_user`` distinct items each from ``catalogue`` items.

    User ids are strings ``u0``, ``u1``, ... and item ids integers 101.., so a test can
    tell raw ids from the internal ids 1..catalogue. Timestamps are integer seconds.
    """
    rng = random.Random(seed)
    rows = ["user_id,item_id,timestamp"]
    for user in range(users):
        for step, item in enumerate(rng.sample(range(101, 101 + catalogue), per_user)):
            rows.append(f"u{user},{item},{1_700_000_000 + 60 * step}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def tiny_round_body(dataset: str, **changes: object) -> dict[str, object]:
    """Return a POST /rounds body for one round of a tiny model that trains in about a second."""
    body: dict[str, object] = {
        "dataset": dataset,
        "rounds": 1,
        "model": dict(TINY_MODEL),
        "generation": {"m": 3, "tau": 20},
        "training": {"max_epochs": 2, "patience": 1, "batch_size": 64},
    }
    body.update(changes)
    return body


def rounds_settings(root: Path, **changes: object) -> Settings:
    """Build settings whose registry, runs, uploads and data folders live under ``root``."""
    values: dict[str, object] = {
        "redis_url": ROUNDS_REDIS_URL,
        "checkpoint_dir": root / "models",
        "runs_dir": root / "runs",
        "upload_dir": root / "uploads",
        "data_dir": root / "data",
        "device": "cpu",
        "bootstrap_champion": False,
        "api_key": None,
        **ROUNDS_TIMING,
    }
    values.update(changes)
    return Settings(_env_file=None, **values)


def worker_environment(settings: Settings) -> dict[str, str]:
    """Return the environment that makes ``rsir worker`` use ``settings``."""
    env = dict(os.environ)
    for name in (
        "redis_url", "checkpoint_dir", "runs_dir", "upload_dir", "data_dir", "device", "queue_name",
        "promotion", "heartbeat_interval_s", "stale_after_s", "reaper_interval_s", "max_attempts",
    ):
        env[f"RSIR_{name.upper()}"] = str(getattr(settings, name))
    env["RSIR_BOOTSTRAP_CHAMPION"] = "false"
    return env


class WorkerProcess:
    """An ``rsir worker`` subprocess with its log file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rsir_engine.cli", "worker"],
            env=worker_environment(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """Kill the worker's parent process with SIGKILL, as an operator or the OOM killer would."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Stop the worker: warm shutdown, then cold, then SIGKILL, each bounded by 10 s."""
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()

    def log(self) -> str:
        """Return what the worker logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def rounds_redis_module(redis_available: bool) -> Iterator[redis.Redis]:
    """Return a decoding client on database 14, flushed before and after the module.

    Modules that keep one worker running for all their tests flush per module, because
    flushing under a live worker would delete its registration.
    """
    yield from _flushed_rounds_client(redis_available)


@pytest.fixture
def rounds_redis(redis_available: bool) -> Iterator[redis.Redis]:
    """Return a decoding client on database 14, flushed before and after the test."""
    yield from _flushed_rounds_client(redis_available)


def _flushed_rounds_client(redis_available: bool) -> Iterator[redis.Redis]:
    if not redis_available:
        pytest.skip(f"no Redis server responds at {ROUNDS_REDIS_URL}; start redis-server to run this test")
    client = redis.Redis.from_url(ROUNDS_REDIS_URL, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def make_client(rounds_redis: redis.Redis) -> Iterator[Callable[[Settings], TestClient]]:
    """Return a function that starts an app with given settings; every client is closed after the test."""
    clients: list[TestClient] = []

    def make(settings: Settings) -> TestClient:
        test_client = TestClient(create_app(settings))
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.__exit__(None, None, None)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    """Return a function that starts ``rsir worker`` processes; all are stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="session")
def rounds_helpers() -> SimpleNamespace:
    """Return the helpers above for modules that build their own module-scoped fixtures.

    Test modules cannot import this conftest by name (tests/engine has one too), so the
    helpers come as a fixture: write_round_interactions, tiny_round_body, rounds_settings,
    WorkerProcess and TINY_MODEL.
    """
    return SimpleNamespace(
        write_round_interactions=write_round_interactions,
        tiny_round_body=tiny_round_body,
        rounds_settings=rounds_settings,
        WorkerProcess=WorkerProcess,
        TINY_MODEL=TINY_MODEL,
    )
