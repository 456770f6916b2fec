"""Health and readiness probes, start-up without Redis or a champion, bootstrapping, and /metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from rsir_engine.registry import ModelRegistry

UNREACHABLE_REDIS_URL = "redis://127.0.0.1:6390/0"  # nothing listens on 6390


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of /metrics keyed by name and sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_healthz_is_alive(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz_ready_with_redis_and_model(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"ready": True, "redis": True, "model_version": 1, "reasons": []}


def test_readyz_503_when_redis_unreachable(settings_factory: Callable, registry_dir: Path) -> None:
    app = create_app(settings_factory(registry_dir, redis_url=UNREACHABLE_REDIS_URL, redis_timeout_s=0.5))
    with TestClient(app) as client:
        ready = client.get("/readyz")
        alive = client.get("/healthz")
        inference = client.post("/recommend", json={"items": [50]})

    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False
    assert body["redis"] is False
    assert body["model_version"] == 1
    assert len(body["reasons"]) == 1
    assert body["reasons"][0].startswith("Redis unreachable at 127.0.0.1:6390/0")
    assert alive.status_code == 200
    # Inference needs only the model, so it keeps working without Redis.
    assert inference.status_code == 200


def test_readyz_503_without_champion(settings_factory: Callable, tmp_path: Path, redis_client: redis.Redis) -> None:
    app = create_app(settings_factory(tmp_path / "empty-registry"))
    with TestClient(app) as client:
        ready = client.get("/readyz")
        inference = client.post("/augment", json={"users": [{"user_id": 1, "items": [50]}]})

    assert ready.status_code == 503
    assert ready.json()["model_version"] is None
    assert "has no champion alias" in ready.json()["reasons"][0]
    assert inference.status_code == 503
    assert "has no champion alias" in inference.json()["detail"]["message"]


def test_bootstrap_trains_first_champion(
    settings_factory: Callable, tmp_path: Path, interactions_csv: Path, redis_client: redis.Redis, wait_until: Callable
) -> None:
    settings = settings_factory(
        tmp_path / "empty-registry", bootstrap_champion=True, bootstrap_dataset=str(interactions_csv), bootstrap_max_epochs=1
    )
    app = create_app(settings)
    with TestClient(app) as client:
        early = client.get("/readyz")
        alive = client.get("/healthz")
        assert wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=120)
        recommended = client.post("/recommend", json={"items": [50, 51]})

    assert alive.status_code == 200
    if early.status_code == 503:  # training may finish before the first probe on a fast machine
        assert early.json()["reasons"] == [f"model not loaded yet: bootstrapping champion on {interactions_csv}"]
    assert recommended.status_code == 200
    assert recommended.json()["model_version"] == 1
    registry = ModelRegistry(tmp_path / "empty-registry")
    assert registry.aliases() == {"champion": 1}
    assert registry.alias_history("champion")[0].reason == "bootstrap"


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    before = scrape(client)
    client.get("/models/1")
    client.get("/models/2")
    client.get("/models/404")
    result = client.post("/augment", json={"users": [{"user_id": 1, "items": [50, 172, 133]}], "m": 4}).json()
    client.post("/augment", content=b"x" * 3_000_000, headers={"content-type": "application/json"})
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("rsir_http_requests_total", method="GET", route="/models/{version}", status="200") == 2
    assert delta("rsir_http_requests_total", method="GET", route="/models/{version}", status="404") == 1
    assert delta("rsir_http_requests_total", method="POST", route="/augment", status="200") == 1
    assert delta("rsir_http_requests_total", method="POST", route="/augment", status="413") == 1
    assert delta("rsir_http_request_duration_seconds_count", method="POST", route="/augment", status="200") == 1
    assert delta("rsir_sequences_generated_total", endpoint="augment") == result["stats"]["started"]
    assert delta("rsir_sequences_kept_total", endpoint="augment") == result["stats"]["kept"]
    assert after[("rsir_serving_model_version", ())] == 1


def test_metrics_unknown_path_has_one_label(client: TestClient) -> None:
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")

    samples = scrape(client)

    routes = {dict(labels).get("route") for name, labels in samples if name == "rsir_http_requests_total"}
    assert "unmatched" in routes
    assert not any(route and route.startswith("/no/such") for route in routes)
