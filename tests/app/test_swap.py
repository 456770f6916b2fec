"""Champion hot swap under load over real HTTP, through the API and through Redis pub/sub."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import httpx
import pytest
import redis
import torch
from fastapi import FastAPI

from app.events import publish_champion_changed
from app.observability import REGISTRY
from app.serving import ModelHolder, top_k_items
from rsir_engine.errors import CheckpointError
from rsir_engine.registry import ModelRegistry

THREADS = 4
REQUESTS_PER_THREAD = 15
BODY = {"users": [{"user_id": 1, "items": [50, 172, 133, 181, 174]}, {"user_id": 2, "items": [200, 201, 203]}], "m": 3}


def rejected_swaps() -> float:
    return REGISTRY.get_sample_value("rsir_model_swaps_total", {"outcome": "rejected"}) or 0.0


class Load:
    """Concurrent /augment requests that record status, model version and whether the swap had happened."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.swapped = threading.Event()  # set by the test once the swap is known to be done
        self.results: list[tuple[int, int | None, bool]] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(THREADS)]

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=60) as http:
                for _ in range(REQUESTS_PER_THREAD):
                    after_swap = self.swapped.is_set()
                    response = http.post("/augment", json=BODY)
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    with self._lock:
                        self.results.append((response.status_code, version, after_swap))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(120)

    def done(self) -> int:
        with self._lock:
            return len(self.results)


def check_load(load: Load, *, new_version: int) -> None:
    assert not load.errors
    assert len(load.results) == THREADS * REQUESTS_PER_THREAD
    assert [status for status, _, _ in load.results if status != 200] == []
    assert {version for _, version, _ in load.results} <= {1, new_version}
    after = [version for _, version, after_swap in load.results if after_swap]
    assert after, "every request started before the swap; the test did not overlap the swap with load"
    assert set(after) == {new_version}
    assert any(version == 1 for _, version, _ in load.results)


def test_swap_by_api_promotion_under_load(
    app: FastAPI, redis_client: redis.Redis, live_server: Callable, wait_until: Callable
) -> None:
    with live_server(app) as base_url:
        load = Load(base_url)
        load.start()
        assert wait_until(lambda: load.done() >= 10, timeout_s=60)

        response = httpx.post(f"{base_url}/models/2/promote", json={"reason": "swap test"}, timeout=60)
        load.swapped.set()
        load.join()

    assert response.status_code == 200, response.text
    check_load(load, new_version=2)


def test_swap_by_pubsub_event_under_load(
    app: FastAPI, registry: ModelRegistry, redis_client: redis.Redis, live_server: Callable, wait_until: Callable
) -> None:
    with live_server(app) as base_url:
        assert app.state.listener.subscribed.wait(10)
        load = Load(base_url)
        load.start()
        assert wait_until(lambda: load.done() >= 10, timeout_s=60)

        # What a round worker does after a better model: move the alias, then announce it.
        registry.set_alias("champion", 2, reason="worker promotion", actor="worker")
        publish_champion_changed(redis_client, 2)
        assert wait_until(lambda: app.state.holder.current.version == 2)
        load.swapped.set()
        load.join()

    check_load(load, new_version=2)


@pytest.mark.parametrize("damage", ["truncated-weights", "edited-item-map"])
def test_pubsub_swap_to_broken_checkpoint_keeps_old_model(
    app: FastAPI,
    registry: ModelRegistry,
    redis_client: redis.Redis,
    live_server: Callable,
    wait_until: Callable,
    broken_version: Callable[[str], int],
    damage: str,
) -> None:
    broken = broken_version(damage)

    with live_server(app) as base_url:
        assert app.state.listener.subscribed.wait(10)
        rejected_before = rejected_swaps()
        registry.set_alias("champion", broken, reason="bad worker promotion", actor="worker")
        publish_champion_changed(redis_client, broken)

        assert wait_until(lambda: rejected_swaps() > rejected_before)
        response = httpx.post(f"{base_url}/augment", json=BODY, timeout=60)
        ready = httpx.get(f"{base_url}/readyz", timeout=10)

    assert response.status_code == 200
    assert response.json()["model_version"] == 1
    assert ready.status_code == 200
    assert ready.json()["model_version"] == 1


def test_stale_event_follows_registry(
    app: FastAPI, redis_client: redis.Redis, live_server: Callable, wait_until: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.serving")
    with live_server(app) as base_url:
        assert app.state.listener.subscribed.wait(10)
        # The registry's champion is still version 1, so this announcement is stale.
        publish_champion_changed(redis_client, 2)
        assert wait_until(lambda: "the registry's champion is version 1; following the registry" in caplog.text)
        response = httpx.post(f"{base_url}/recommend", json={"items": [50]}, timeout=60)

    assert response.json()["model_version"] == 1


def test_listener_sync_catches_missed_change(client, registry: ModelRegistry) -> None:
    registry.set_alias("champion", 2, reason="changed while the listener was disconnected")

    client.app.state.listener.sync_with_registry()

    assert client.app.state.holder.current.version == 2


def test_holder_request_keeps_reference_through_swap(registry: ModelRegistry) -> None:
    holder = ModelHolder(registry, device=torch.device("cpu"))
    holder.swap_to(1)
    reference = holder.get()

    holder.swap_to(2)

    assert reference.version == 1
    assert len(top_k_items(reference, [1, 2, 3], 5, exclude_history=True)) == 5
    assert holder.get().version == 2


def test_holder_failed_swap_keeps_old_model(
    registry: ModelRegistry, broken_version: Callable[[str], int], caplog: pytest.LogCaptureFixture
) -> None:
    broken = broken_version("truncated-weights")
    holder = ModelHolder(registry, device=torch.device("cpu"))
    holder.swap_to(1)

    with pytest.raises(CheckpointError):
        holder.swap_to(broken)

    assert holder.get().version == 1
    assert f"rejected swap to model version {broken}, still serving version 1" in caplog.text


def test_holder_promote_repairs_alias_of_served_version(registry: ModelRegistry, broken_version: Callable[[str], int]) -> None:
    holder = ModelHolder(registry, device=torch.device("cpu"))
    holder.swap_to(1)
    broken = broken_version("truncated-weights")
    registry.set_alias("champion", broken, reason="a worker promoted a damaged copy")

    change, loaded = holder.promote(1, reason="roll back", actor="tester")

    assert (change.from_version, change.to_version) == (broken, 1)
    assert loaded is holder.get()
    assert registry.aliases()["champion"] == 1
