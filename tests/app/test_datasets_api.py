"""Tests of GET and POST /datasets: uploads in three formats, limits and validation errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings


@pytest.fixture
def settings(tmp_path: Path, rounds_helpers: SimpleNamespace) -> Settings:
    """Settings with the upload and data folders under the test's tmp_path."""
    return rounds_helpers.rounds_settings(tmp_path)


@pytest.fixture
def api(settings: Settings, make_client: Callable[[Settings], TestClient]) -> TestClient:
    """A client of an app without an API key."""
    return make_client(settings)


@pytest.fixture
def interactions_csv(tmp_path: Path, rounds_helpers: SimpleNamespace) -> Path:
    """60 users x 12 items over 40 items, as CSV."""
    return rounds_helpers.write_round_interactions(tmp_path / "clicks.csv")


BOUNDARY = "rsirtestboundary"


def multipart_body(fields: dict[str, str], file: tuple[str, bytes] | None) -> bytes:
    """Build a multipart/form-data body by hand, so a test controls every part."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    if file is not None:
        filename, content = file
        header = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
        parts.append(header.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def leftover_files(settings: Settings) -> list[Path]:
    """Return every file in the upload folder, including half-written ones."""
    return sorted(settings.upload_dir.glob("*")) if settings.upload_dir.exists() else []


def upload(api: TestClient, path: Path, filename: str | None = None, **fields: str):
    """POST a file to /datasets as the form field 'file'."""
    with open(path, "rb") as handle:
        return api.post("/datasets", files={"file": (filename or path.name, handle)}, data=fields)


def test_upload_csv_returns_metadata(api: TestClient, interactions_csv: Path, settings: Settings) -> None:
    response = upload(api, interactions_csv)

    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("up-")
    assert body["source"] == "upload"
    assert body["name"] == "clicks"
    assert body["format"] == "csv"
    assert body["rows"] == 720
    assert body["users"] == 60
    assert body["items"] == 40
    assert len(body["fingerprint"]) == 64
    assert (settings.upload_dir / f"{body['id']}.csv").is_file()
    assert (settings.upload_dir / f"{body['id']}.json").is_file()


@pytest.mark.parametrize("file_format", ["parquet", "inter"])
def test_upload_other_formats_match_csv_fingerprint(api: TestClient, interactions_csv: Path, tmp_path: Path, file_format: str) -> None:
    frame = pd.read_csv(interactions_csv)
    if file_format == "parquet":
        path = tmp_path / "clicks.parquet"
        frame.to_parquet(path)
    else:
        path = tmp_path / "clicks.inter"
        frame.columns = ["user_id:token", "item_id:token", "timestamp:float"]
        frame.to_csv(path, sep="\t", index=False)
    from_csv = upload(api, interactions_csv).json()

    response = upload(api, path)

    assert response.status_code == 201
    assert response.json()["format"] == file_format
    assert response.json()["fingerprint"] == from_csv["fingerprint"]


def test_upload_custom_column_names(api: TestClient, interactions_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(interactions_csv).rename(columns={"user_id": "visitor", "item_id": "product", "timestamp": "ts"})
    path = tmp_path / "renamed.csv"
    frame.to_csv(path, index=False)

    response = upload(api, path, user_col="visitor", item_col="product", time_col="ts", name="renamed clicks")

    assert response.status_code == 201
    assert response.json()["name"] == "renamed clicks"
    assert response.json()["columns"]["item_col"] == "product"
    assert response.json()["users"] == 60


def test_upload_missing_column_is_422(api: TestClient, tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "no-items.csv"
    path.write_text("user_id,product,timestamp\n1,2,3\n", encoding="utf-8")

    response = upload(api, path)

    assert response.status_code == 422
    message = response.json()["detail"]["message"]
    assert "item_id" in message
    assert "no-items.csv" in message
    assert list(settings.upload_dir.iterdir()) == []


def test_upload_non_integer_timestamp_names_row(api: TestClient, interactions_csv: Path, tmp_path: Path) -> None:
    lines = interactions_csv.read_text(encoding="utf-8").splitlines()
    user, item, _ = lines[17].split(",")
    lines[17] = f"{user},{item},yesterday"
    path = tmp_path / "bad-time.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    response = upload(api, path)

    assert response.status_code == 422
    message = response.json()["detail"]["message"]
    assert "row 17" in message
    assert "'yesterday'" in message


def test_upload_fractional_timestamp_is_422(api: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "fraction.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,3\n1,3,4.5\n", encoding="utf-8")

    response = upload(api, path)

    assert response.status_code == 422
    assert "row 2" in response.json()["detail"]["message"]


def test_upload_over_limit_is_413(settings: Settings, make_client: Callable[[Settings], TestClient], interactions_csv: Path) -> None:
    small = make_client(settings.model_copy(update={"max_upload_bytes": 2048}))

    response = upload(small, interactions_csv)

    assert response.status_code == 413
    assert "2048" in response.json()["detail"]["message"]
    assert leftover_files(settings) == []


def test_upload_over_limit_without_content_length_is_413(
    settings: Settings, make_client: Callable[[Settings], TestClient], interactions_csv: Path
) -> None:
    small = make_client(settings.model_copy(update={"max_upload_bytes": 2048}))
    body = multipart_body({}, ("clicks.csv", interactions_csv.read_bytes()))

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = small.post("/datasets", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})

    assert response.status_code == 413
    assert leftover_files(settings) == []


ONE_ROW = b"user_id,item_id,timestamp\n1,2,3\n"


@pytest.mark.parametrize(
    ("fields", "file", "expected"),
    [
        ({"name": "nothing"}, None, "no file"),
        ({}, ("clicks.txt", ONE_ROW), "cannot tell the format"),
        ({"colour": "red"}, ("clicks.csv", ONE_ROW), "unknown form field"),
        ({"format": "xlsx"}, ("clicks.csv", ONE_ROW), "not supported"),
        ({}, ("clicks.csv", b"user_id,item_id,timestamp\n"), "no interaction rows"),
        ({"name": "x" * 200}, ("clicks.csv", ONE_ROW), "shorter name"),
    ],
)
def test_upload_bad_form_is_422(api: TestClient, fields: dict[str, str], file: tuple[str, bytes] | None, expected: str) -> None:
    response = api.post(
        "/datasets", content=multipart_body(fields, file), headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )

    assert response.status_code == 422
    assert expected in str(response.json()["detail"])


def test_upload_json_body_is_422(api: TestClient) -> None:
    response = api.post("/datasets", json={"file": "clicks.csv"})

    assert response.status_code == 422
    assert "multipart/form-data" in response.json()["detail"]["message"]


def test_list_datasets_shows_public_and_uploads(api: TestClient, interactions_csv: Path, settings: Settings) -> None:
    (settings.data_dir / "ml-100k").mkdir(parents=True)
    (settings.data_dir / "ml-100k" / "u.data").write_text("1\t2\t3\t4\n", encoding="utf-8")
    uploaded = upload(api, interactions_csv).json()

    response = api.get("/datasets")

    assert response.status_code == 200
    body = response.json()
    by_id = {entry["id"]: entry for entry in body["data"]}
    assert body["count"] == 3
    assert [entry["id"] for entry in body["data"]] == ["ml-100k", "ml-1m", uploaded["id"]]
    assert by_id["ml-100k"]["fetched"] is True
    assert by_id["ml-1m"]["fetched"] is False
    assert by_id[uploaded["id"]]["rows"] == 720


def test_upload_requires_api_key_when_set(
    settings: Settings, make_client: Callable[[Settings], TestClient], interactions_csv: Path
) -> None:
    guarded = make_client(settings.model_copy(update={"api_key": "secret"}))

    without = upload(guarded, interactions_csv)
    with open(interactions_csv, "rb") as handle:
        with_key = guarded.post("/datasets", files={"file": ("clicks.csv", handle)}, headers={"X-API-Key": "secret"})

    assert without.status_code == 401
    assert with_key.status_code == 201
    assert guarded.get("/datasets").status_code == 200
