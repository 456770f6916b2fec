"""Model registry endpoints: list, inspect, promote, alias history, API key."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.events import MODEL_EVENTS_CHANNEL
from app.main import create_app
from rsir_engine.registry import ModelRegistry

API_KEY = "test-key"


def next_event(pubsub: redis.client.PubSub, timeout_s: float = 5.0) -> dict | None:
    """Return the next decoded message on a subscription, skipping the subscribe confirmation."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            return json.loads(message["data"])
    return None


def test_list_models_shows_versions_and_aliases(client: TestClient) -> None:
    response = client.get("/models")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert body["aliases"] == {"champion": 1}
    first, second = body["data"]
    assert (first["version"], first["round"], first["parent_version"], first["aliases"]) == (1, 0, None, ["champion"])
    assert (second["version"], second["round"], second["parent_version"], second["aliases"]) == (2, 1, 1, [])
    assert "ndcg@10" in first["metrics"]["valid"]
    assert first["dataset"]["name"] == "synthetic-walks"
    assert first["created_at"]


def test_get_model_shows_lineage_without_item_list(client: TestClient) -> None:
    response = client.get("/models/2")

    assert response.status_code == 200
    body = response.json()
    assert [entry["version"] for entry in body["lineage"]] == [2, 1]
    assert body["rsir_params"]["m"] == 2
    assert body["architecture_config"]["max_len"] == 20
    assert body["serving"] is False
    assert "item_ids" not in body
    assert len(response.content) < 5000


def test_get_model_by_alias(client: TestClient) -> None:
    body = client.get("/models/champion").json()

    assert body["version"] == 1
    assert body["serving"] is True


@pytest.mark.parametrize("version", ["99", "unknown-alias"])
def test_get_model_unknown_is_404(client: TestClient, version: str) -> None:
    response = client.get(f"/models/{version}")

    assert response.status_code == 404
    assert "not found" in response.json()["detail"]["message"]


def test_promote_moves_champion_and_swaps(client: TestClient, redis_client: redis.Redis, registry: ModelRegistry) -> None:
    pubsub = redis_client.pubsub()
    pubsub.subscribe(MODEL_EVENTS_CHANNEL)

    response = client.post("/models/2/promote", json={"reason": "round 1 is better", "actor": "tester"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["alias"], body["from_version"], body["to_version"]) == ("champion", 1, 2)
    assert (body["reason"], body["actor"]) == ("round 1 is better", "tester")
    assert body["serving_version"] == 2
    assert body["event_published"] is True
    assert registry.aliases()["champion"] == 2
    assert next_event(pubsub) == {"event": "champion_changed", "version": 2}
    assert client.post("/recommend", json={"items": [50, 172]}).json()["model_version"] == 2
    pubsub.close()


def test_promote_without_body_uses_default_reason(client: TestClient) -> None:
    response = client.post("/models/2/promote")

    assert response.status_code == 200, response.text
    assert response.json()["reason"] == "promoted through the API"


def test_alias_history_records_promotions(client: TestClient) -> None:
    client.post("/models/2/promote", json={"reason": "try round 1"})
    client.post("/models/1/promote", json={"reason": "roll back"})

    response = client.get("/models/aliases/history", params={"alias": "champion"})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [(c["from_version"], c["to_version"], c["reason"]) for c in body["data"]] == [
        (None, 1, "test fixture"),
        (1, 2, "try round 1"),
        (2, 1, "roll back"),
    ]
    assert client.get("/models/aliases/history", params={"alias": "other"}).json() == {"data": [], "count": 0}


def test_promote_unknown_version_is_404(client: TestClient, registry: ModelRegistry) -> None:
    response = client.post("/models/7/promote")

    assert response.status_code == 404
    assert registry.aliases()["champion"] == 1


@pytest.mark.parametrize("damage", ["truncated-weights", "edited-item-map"])
def test_promote_refuses_broken_checkpoint(
    client: TestClient, registry: ModelRegistry, broken_version: Callable[[str], int], damage: str
) -> None:
    broken = broken_version(damage)

    response = client.post(f"/models/{broken}/promote")

    assert response.status_code == 409
    assert f"v{broken:06d}" in response.json()["detail"]["message"]
    assert registry.aliases()["champion"] == 1
    assert len(registry.alias_history("champion")) == 1
    after = client.post("/augment", json={"users": [{"user_id": 1, "items": [50, 172, 133]}]})
    assert after.status_code == 200
    assert after.json()["model_version"] == 1


def test_model_version_request_for_broken_checkpoint_is_409(client: TestClient, broken_version: Callable[[str], int]) -> None:
    broken = broken_version("truncated-weights")

    response = client.post("/recommend", json={"items": [50], "model_version": broken})

    assert response.status_code == 409
    assert "truncated or corrupt" in response.json()["detail"]["message"]


def test_promote_requires_api_key_when_set(
    settings_factory: Callable, registry_dir: Path, redis_client: redis.Redis, registry: ModelRegistry
) -> None:
    app = create_app(settings_factory(registry_dir, api_key=API_KEY))
    with TestClient(app) as client:
        missing = client.post("/models/2/promote")
        wrong = client.post("/models/2/promote", headers={"X-API-Key": "nope"})
        assert registry.aliases()["champion"] == 1
        right = client.post("/models/2/promote", headers={"X-API-Key": API_KEY})

    assert missing.status_code == 401
    assert "missing X-API-Key" in missing.json()["detail"]["message"]
    assert wrong.status_code == 401
    assert "wrong X-API-Key" in wrong.json()["detail"]["message"]
    assert right.status_code == 200
    assert registry.aliases()["champion"] == 2


def test_read_endpoints_need_no_api_key(settings_factory: Callable, registry_dir: Path, redis_client: redis.Redis) -> None:
    app = create_app(settings_factory(registry_dir, api_key=API_KEY))
    with TestClient(app) as client:
        assert client.get("/models").status_code == 200
        assert client.post("/recommend", json={"items": [50]}).status_code == 200


def test_promote_without_redis_is_503(settings_factory: Callable, registry_dir: Path, registry: ModelRegistry) -> None:
    app = create_app(settings_factory(registry_dir, redis_url="redis://127.0.0.1:6390/0", redis_timeout_s=0.5))
    with TestClient(app) as client:
        response = client.post("/models/2/promote")

    assert response.status_code == 503
    assert "Redis is unreachable" in response.json()["detail"]["message"]
    assert registry.aliases()["champion"] == 1
