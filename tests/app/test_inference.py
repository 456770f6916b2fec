"""Inference endpoints through HTTP: /augment, /generate, /fidelity, /recommend."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.schemas.inference import AugmentRequest, FidelityRequest, GenerateRequest, RecommendRequest

HISTORY = [50, 172, 133, 181, 174, 98, 127, 12, 13, 15]
USERS = [
    {"user_id": 1, "items": HISTORY},
    {"user_id": "b", "items": [200, 201, 203, 204, 206, 207, 208]},
    {"user_id": 3, "items": [1, 121, 117, 300, 100]},
]


def augment(client: TestClient, **changes: object) -> dict:
    body = {"users": USERS, "m": 4, "tau": 50, "p": 0.5, "min_len": 2, "seed": 11}
    body.update(changes)
    response = client.post("/augment", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_augment_returns_kept_sequences_with_records(client: TestClient) -> None:
    result = augment(client)

    assert result["model_version"] == 1
    stats = result["stats"]
    assert stats["started"] == 3 * 4
    assert stats["kept"] == len(result["augmentations"])
    assert stats["kept"] > 0
    assert stats["started"] == stats["kept"] + stats["dropped_short"] + stats["duplicates"] + stats["copies_of_existing"]
    assert sum(stats["stop_reasons"].values()) == stats["started"]
    assert 0.0 < stats["step_pass_rate"] <= 1.0
    assert result["unknown_items"] == {"count": 0, "items": [], "dropped_events": 0, "skipped_users": []}
    assert result["truncated_users"] == 0
    assert result["parameters"]["max_len"] == 20
    assert result["parameters"]["fidelity"] is True

    histories = {user["user_id"]: user["items"] for user in USERS}
    for sequence in result["augmentations"]:
        items = sequence["items"]
        assert items[0] == histories[sequence["user_id"]][0]
        assert len(items) >= 2
        assert len(set(items)) == len(items)
        appended = [step["item"] for step in sequence["steps"] if step["item"] is not None]
        assert appended == items[1:]
        assert all(step["passed"] for step in sequence["steps"][: len(items) - 1])
        if sequence["stop_reason"] == "fidelity":
            assert sequence["steps"][-1]["passed"] is False
            assert sequence["steps"][-1]["best_rank"] > 50


def test_augment_same_seed_same_output(client: TestClient) -> None:
    first = augment(client, seed=5, temperature=1.0)
    second = augment(client, seed=5, temperature=1.0)

    assert first == second


def test_augment_other_seed_changes_output(client: TestClient) -> None:
    outputs = {str(augment(client, seed=seed, temperature=1.0, m=6)["augmentations"]) for seed in (1, 2, 3)}

    assert len(outputs) > 1


def test_augment_truncates_long_history(client: TestClient) -> None:
    long_history = list(range(1, 31))  # 30 items, the model reads 20
    result = augment(client, users=[{"user_id": "long", "items": long_history}])

    assert result["truncated_users"] == 1
    assert result["history_max_len"] == 20
    assert all(sequence["items"][0] == 11 for sequence in result["augmentations"])


def test_augment_drop_unknown_reports_items(client: TestClient) -> None:
    users = [
        {"user_id": 1, "items": [50, 999_999, 172, "no-such-movie", 133, 999_999]},
        {"user_id": 2, "items": ["ghost"]},
    ]
    result = augment(client, users=users, drop_unknown=True)

    unknown = result["unknown_items"]
    assert unknown["count"] == 3
    assert unknown["items"] == [999_999, "no-such-movie", "ghost"]
    assert unknown["dropped_events"] == 4
    assert unknown["skipped_users"] == [2]
    assert {sequence["user_id"] for sequence in result["augmentations"]} <= {1}


def test_augment_string_ids_match_integer_ids(client: TestClient) -> None:
    as_ints = augment(client, users=[{"user_id": 1, "items": [50, 172, 133]}])
    as_strings = augment(client, users=[{"user_id": 1, "items": ["50", "172", "133"]}])

    assert as_ints["augmentations"] == as_strings["augmentations"]


def test_augment_model_version_override(client: TestClient) -> None:
    result = augment(client, model_version=2)
    again = augment(client, model_version="2")
    champion = augment(client, model_version="champion")

    assert result["model_version"] == 2
    assert again["model_version"] == 2
    assert champion["model_version"] == 1
    assert augment(client)["model_version"] == 1


def test_model_version_cache_is_bounded(client: TestClient) -> None:
    holder = client.app.state.holder
    augment(client, model_version=2)

    assert list(holder._cache) == [2]
    assert holder.cache_size == 2


def test_generate_returns_every_sequence_without_fidelity_stop(client: TestClient) -> None:
    body = {"users": USERS, "m": 3, "tau": 1, "max_len": 8, "seed": 0}
    response = client.post("/generate", json=body)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["parameters"]["fidelity"] is False
    assert result["parameters"]["max_len"] == 8
    stats = result["stats"]
    assert stats["started"] == 9
    assert stats["stop_reasons"]["fidelity"] == 0
    assert len(result["sequences"]) == stats["started"] - stats["duplicates"]
    for sequence in result["sequences"]:
        assert len(sequence["items"]) == 8
        assert sequence["stop_reason"] == "max_len"
        assert [step["step"] for step in sequence["steps"]] == list(range(1, 8))
        # tau=1 fails most checks, and the failures are recorded without stopping.
        assert all(step["passed"] == (1 <= step["best_rank"] <= 1) for step in sequence["steps"])


def test_fidelity_reproduces_augment_records(client: TestClient) -> None:
    result = augment(client, users=[USERS[0]], tau=20)
    assert result["augmentations"], "the champion kept nothing; the fixture model is too weak"
    candidates = [sequence["items"] for sequence in result["augmentations"]]

    response = client.post("/fidelity", json={"items": HISTORY, "candidates": candidates, "tau": 20})

    assert response.status_code == 200, response.text
    reports = response.json()["reports"]
    assert len(reports) == len(candidates)
    for sequence, report in zip(result["augmentations"], reports):
        appended_steps = [step for step in sequence["steps"] if step["item"] is not None]
        assert report["steps"] == appended_steps
        assert report["kept_length"] == len(sequence["items"])
        assert report["kept_items"] == sequence["items"]
        assert report["stop_reason"] is None


def test_fidelity_cuts_at_first_failed_check(client: TestClient) -> None:
    response = client.post("/fidelity", json={"items": HISTORY, "candidates": [[50, 390, 391, 392, 5, 6]], "tau": 1})

    assert response.status_code == 200, response.text
    report = response.json()["reports"][0]
    assert [step["step"] for step in report["steps"]] == [1, 2, 3, 4, 5]
    assert [step["item"] for step in report["steps"]] == [390, 391, 392, 5, 6]
    first_failure = next(step for step in report["steps"] if not step["passed"])
    assert report["stop_reason"] == "fidelity"
    assert report["kept_length"] == first_failure["step"]
    assert report["kept_items"] == [50, 390, 391, 392, 5, 6][: first_failure["step"]]


def test_fidelity_reports_exhausted_history(client: TestClient) -> None:
    response = client.post("/fidelity", json={"items": [50, 51], "candidates": [[50, 51, 52]], "tau": 400})

    report = response.json()["reports"][0]
    assert report["steps"][1]["best_rank"] == 0
    assert report["stop_reason"] == "exhausted"
    assert report["kept_length"] == 2


def test_recommend_returns_top_k(client: TestClient) -> None:
    response = client.post("/recommend", json={"items": HISTORY, "k": 15})

    assert response.status_code == 200, response.text
    result = response.json()
    items = result["items"]
    assert result["model_version"] == 1
    assert [item["rank"] for item in items] == list(range(1, 16))
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True)
    assert all(1 <= item["item"] <= 400 for item in items)


def test_recommend_excludes_history(client: TestClient) -> None:
    included = client.post("/recommend", json={"items": HISTORY, "k": 100}).json()["items"]
    excluded = client.post("/recommend", json={"items": HISTORY, "k": 100, "exclude_history": True}).json()["items"]

    assert len(excluded) == 100
    assert not {item["item"] for item in excluded} & set(HISTORY)
    expected = [item["item"] for item in included if item["item"] not in HISTORY]
    assert [item["item"] for item in excluded][: len(expected)] == expected


def test_recommend_drop_unknown(client: TestClient) -> None:
    response = client.post("/recommend", json={"items": [50, "nope", 172], "k": 3, "drop_unknown": True})

    assert response.status_code == 200, response.text
    assert response.json()["unknown_items"] == {"count": 1, "items": ["nope"], "dropped_events": 1, "skipped_users": []}


@pytest.mark.parametrize(
    ("path", "schema"),
    [
        ("/augment", AugmentRequest),
        ("/generate", GenerateRequest),
        ("/fidelity", FidelityRequest),
        ("/recommend", RecommendRequest),
    ],
)
def test_schema_examples_work_as_is(client: TestClient, path: str, schema: type) -> None:
    for example in schema.model_config["json_schema_extra"]["examples"]:
        response = client.post(path, json=example)

        assert response.status_code == 200, response.text
