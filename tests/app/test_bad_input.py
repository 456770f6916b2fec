"""Bad input to the inference and model endpoints: 413, 422 naming field and value, 404, 503."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import create_app

USER = {"user_id": 1, "items": [50, 172, 133]}
AUGMENT = {"users": [USER]}
FIDELITY = {"items": [50, 172, 133], "candidates": [[50, 172]]}
RECOMMEND = {"items": [50, 172]}


def with_changes(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def user_items(*items: Any) -> dict[str, Any]:
    return {"users": [{"user_id": 1, "items": list(items)}]}


# (path, body, loc of the invalid value, the value as echoed back)
INVALID_FIELDS = [
    ("/augment", {"users": []}, ["body", "users"], []),
    ("/augment", {}, ["body", "users"], {}),
    ("/augment", {"users": [{"user_id": 1, "items": []}]}, ["body", "users", 0, "items"], []),
    ("/augment", user_items(50, -1), ["body", "users", 0, "items", 1], -1),
    ("/augment", user_items(2**53 + 1), ["body", "users", 0, "items", 0], 2**53 + 1),
    ("/augment", user_items("x" * 129), ["body", "users", 0, "items", 0], "x" * 129),
    ("/augment", user_items("  "), ["body", "users", 0, "items", 0], "  "),
    ("/augment", user_items(True), ["body", "users", 0, "items", 0], True),
    ("/augment", user_items(1.5), ["body", "users", 0, "items", 0], 1.5),
    ("/augment", user_items(None), ["body", "users", 0, "items", 0], None),
    ("/augment", {"users": [{"user_id": -3, "items": [50]}]}, ["body", "users", 0, "user_id"], -3),
    ("/augment", {"users": [{"items": [50]}]}, ["body", "users", 0, "user_id"], {"items": [50]}),
    ("/augment", with_changes(AUGMENT, m=0), ["body", "m"], 0),
    ("/augment", with_changes(AUGMENT, m=51), ["body", "m"], 51),
    ("/augment", with_changes(AUGMENT, tau=0), ["body", "tau"], 0),
    ("/augment", with_changes(AUGMENT, tau=2**40), ["body", "tau"], 2**40),
    ("/augment", with_changes(AUGMENT, p=1.5), ["body", "p"], 1.5),
    ("/augment", with_changes(AUGMENT, p=-0.1), ["body", "p"], -0.1),
    ("/augment", with_changes(AUGMENT, max_len=1), ["body", "max_len"], 1),
    ("/augment", with_changes(AUGMENT, min_len=0), ["body", "min_len"], 0),
    ("/augment", with_changes(AUGMENT, min_len=25), ["body", "min_len"], 25),
    ("/augment", with_changes(AUGMENT, temperature=0), ["body", "temperature"], 0),
    ("/augment", with_changes(AUGMENT, top_k=0), ["body", "top_k"], 0),
    ("/augment", with_changes(AUGMENT, seed=-1), ["body", "seed"], -1),
    ("/augment", with_changes(AUGMENT, drop_unknown="maybe"), ["body", "drop_unknown"], "maybe"),
    ("/augment", with_changes(AUGMENT, model_version=0), ["body", "model_version", "constrained-int"], 0),
    ("/augment", with_changes(AUGMENT, model_version="Bad Alias!"), ["body", "model_version", "constrained-str"], "Bad Alias!"),
    ("/generate", {"users": []}, ["body", "users"], []),
    ("/generate", with_changes(AUGMENT, m=51), ["body", "m"], 51),
    ("/generate", with_changes(AUGMENT, max_len=1), ["body", "max_len"], 1),
    ("/generate", user_items(-5), ["body", "users", 0, "items", 0], -5),
    ("/fidelity", with_changes(FIDELITY, items=[]), ["body", "items"], []),
    ("/fidelity", with_changes(FIDELITY, candidates=[]), ["body", "candidates"], []),
    ("/fidelity", with_changes(FIDELITY, candidates=[[50], []]), ["body", "candidates", 1], []),
    ("/fidelity", with_changes(FIDELITY, candidates=[list(range(1, 22))]), ["body", "candidates", 0], 21),
    ("/fidelity", with_changes(FIDELITY, candidates=[[50, -2]]), ["body", "candidates", 0, 1], -2),
    ("/fidelity", with_changes(FIDELITY, tau=0), ["body", "tau"], 0),
    ("/recommend", {"items": []}, ["body", "items"], []),
    ("/recommend", with_changes(RECOMMEND, k=0), ["body", "k"], 0),
    ("/recommend", with_changes(RECOMMEND, k=101), ["body", "k"], 101),
    ("/recommend", {"items": [50, -7]}, ["body", "items", 1], -7),
]


@pytest.mark.parametrize(("path", "body", "loc", "value"), INVALID_FIELDS)
def test_invalid_field_is_422_naming_field_and_value(
    client: TestClient, path: str, body: dict, loc: list, value: Any
) -> None:
    response = client.post(path, json=body)

    assert response.status_code == 422, response.text
    issues = response.json()["detail"]
    matching = [issue for issue in issues if issue["loc"] == loc]
    assert matching, f"no error at {loc}: {issues}"
    assert matching[0]["input"] == value
    assert matching[0]["msg"]


def test_min_len_above_max_len_is_422(client: TestClient) -> None:
    response = client.post("/augment", json=with_changes(AUGMENT, min_len=6, max_len=5))

    assert response.status_code == 422
    assert "min_len 6 is above max_len 5" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/augment", {"users": [USER] * 5}, ["body", "users"]),
        ("/generate", {"users": [USER] * 5}, ["body", "users"]),
        ("/augment", user_items(*range(1, 12)), ["body", "users", 0, "items"]),
        ("/fidelity", with_changes(FIDELITY, items=list(range(1, 12))), ["body", "items"]),
        ("/fidelity", with_changes(FIDELITY, candidates=[[50]] * 5), ["body", "candidates"]),
        ("/recommend", {"items": list(range(1, 12))}, ["body", "items"]),
    ],
)
def test_request_limits_from_settings(
    settings_factory: Callable, registry_dir: Path, redis_client, path: str, body: dict, loc: list
) -> None:
    app = create_app(settings_factory(registry_dir, max_users_per_request=4, max_sequence_items=10))
    with TestClient(app) as client:
        response = client.post(path, json=body)

    assert response.status_code == 422, response.text
    issue = response.json()["detail"][0]
    assert issue["loc"] == loc
    assert "more than the limit" in issue["msg"]


def test_long_rejected_input_is_shortened(client: TestClient) -> None:
    response = client.post("/augment", json={"users": [{"user_id": 1, "items": []}] * 300})

    assert response.status_code == 422
    assert len(response.content) < 100_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/augment", user_items(50, 999_999, "ghost", 172, 999_999)),
        ("/generate", user_items(50, 999_999, "ghost", 172, 999_999)),
        ("/fidelity", {"items": [50, 999_999], "candidates": [[50, "ghost"], [172, 999_999]]}),
        ("/recommend", {"items": [50, 999_999, "ghost", 999_999]}),
    ],
)
def test_unknown_items_are_422_listing_them(client: TestClient, path: str, body: dict) -> None:
    response = client.post(path, json=body)

    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert sorted(map(str, detail["unknown_items"])) == ["999999", "ghost"]
    assert "not in the model's catalogue" in detail["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/augment", {"users": [{"user_id": 1, "items": [999_999, "ghost"]}], "drop_unknown": True}),
        ("/recommend", {"items": ["ghost"], "drop_unknown": True}),
    ],
)
def test_only_unknown_items_with_drop_unknown_is_422(client: TestClient, path: str, body: dict) -> None:
    response = client.post(path, json=body)

    assert response.status_code == 422
    assert "nothing" in response.json()["detail"]["message"]


@pytest.mark.parametrize("path", ["/augment", "/generate", "/fidelity", "/recommend"])
def test_unknown_model_version_is_404(client: TestClient, path: str) -> None:
    body = {"/augment": AUGMENT, "/generate": AUGMENT, "/fidelity": FIDELITY, "/recommend": RECOMMEND}[path]

    response = client.post(path, json=with_changes(body, model_version=99))

    assert response.status_code == 404
    assert "model version 99 not found" in response.json()["detail"]["message"]


@pytest.mark.parametrize("path", ["/augment", "/generate", "/fidelity", "/recommend"])
def test_malformed_json_is_422(client: TestClient, path: str) -> None:
    response = client.post(path, content=b'{"users": [', headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def oversized_body() -> bytes:
    """Return a syntactically valid /augment body of about 2.4 MB, over the 2 MiB default limit."""
    items = ",".join(["50"] * 800_000)
    return ('{"users": [{"user_id": 1, "items": [' + items + "]}]}").encode()


@pytest.mark.parametrize("path", ["/augment", "/generate", "/fidelity", "/recommend", "/models/2/promote"])
def test_body_over_limit_is_413(client: TestClient, path: str) -> None:
    response = client.post(path, content=oversized_body(), headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert "which is over the limit of 2097152 bytes (RSIR_MAX_BODY_BYTES)" in response.json()["detail"]["message"]


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        body = oversized_body()
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]

    response = client.post("/augment", content=chunks(), headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json()["detail"]["message"].startswith("request body is over the limit of 2097152 bytes")


def test_body_limits_over_real_http(app: FastAPI, redis_client, live_server: Callable) -> None:
    body = oversized_body()
    with live_server(app) as base_url:
        declared = httpx.post(f"{base_url}/augment", content=body, headers={"content-type": "application/json"}, timeout=30)

        host, port = base_url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        chunks = (body[start:start + 32 * 1024] for start in range(0, len(body), 32 * 1024))
        connection.request("POST", "/augment", body=chunks, headers={"Content-Type": "application/json"}, encode_chunked=True)
        streamed = connection.getresponse()
        streamed_status = streamed.status
        connection.close()

        within_limit = httpx.post(f"{base_url}/augment", json=AUGMENT, timeout=30)

    assert declared.status_code == 413
    assert streamed_status == 413
    assert within_limit.status_code == 200


def test_inference_without_champion_is_503(settings_factory: Callable, tmp_path: Path, redis_client) -> None:
    app = create_app(settings_factory(tmp_path / "empty-registry"))
    with TestClient(app) as client:
        responses = [
            client.post("/augment", json=AUGMENT),
            client.post("/generate", json=AUGMENT),
            client.post("/fidelity", json=FIDELITY),
            client.post("/recommend", json=RECOMMEND),
        ]

    assert [response.status_code for response in responses] == [503] * 4
    assert all("no model is being served" in response.json()["detail"]["message"] for response in responses)


@pytest.mark.parametrize("version", ["0", "abc!", "Champion", "1" * 30])
def test_invalid_version_path_is_422(client: TestClient, version: str) -> None:
    response = client.get(f"/models/{version}")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "version"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [({"reason": "x" * 501}, ["body", "reason"]), ({"actor": "y" * 129}, ["body", "actor"]), ({"reason": 5}, ["body", "reason"])],
)
def test_invalid_promotion_body_is_422(client: TestClient, body: dict, loc: list) -> None:
    response = client.post("/models/2/promote", json=body)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert client.get("/models").json()["aliases"] == {"champion": 1}


def test_invalid_alias_filter_is_422(client: TestClient) -> None:
    response = client.get("/models/aliases/history", params={"alias": "Not An Alias"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "alias"]
