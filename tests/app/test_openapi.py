"""The committed openapi.yaml matches the app, and the document shows what Swagger UI needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.core.config import Settings
from app.main import create_app
from app.openapi_export import openapi_document, render_openapi, write_openapi

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "openapi.yaml"
REGENERATE = "run `rsir openapi --output openapi.yaml` and commit the result"


@pytest.fixture(scope="module")
def document() -> dict:
    return openapi_document(create_app(Settings(_env_file=None)))


def test_openapi_file_matches_app(document: dict) -> None:
    assert OPENAPI_FILE.is_file(), f"{OPENAPI_FILE} is missing; {REGENERATE}"

    committed = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))

    assert committed == document, f"{OPENAPI_FILE.name} is out of date with the app's routes and schemas; {REGENERATE}"


def test_openapi_render_is_stable(tmp_path: Path) -> None:
    app = create_app(Settings(_env_file=None))

    written = write_openapi(tmp_path / "openapi.yaml", app)

    assert written.read_text(encoding="utf-8") == render_openapi(create_app(Settings(_env_file=None)))


def test_openapi_declares_api_key_scheme(document: dict) -> None:
    schemes = document["components"]["securitySchemes"]
    promote = document["paths"]["/models/{version}/promote"]["post"]

    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["APIKeyHeader"]["description"],
    }
    assert promote["security"] == [{"APIKeyHeader": []}]
    assert "401" in promote["responses"]


@pytest.mark.parametrize(
    ("path", "method", "codes"),
    [
        ("/augment", "post", {"200", "404", "409", "413", "422", "503"}),
        ("/generate", "post", {"200", "404", "409", "413", "422", "503"}),
        ("/fidelity", "post", {"200", "404", "409", "413", "422", "503"}),
        ("/recommend", "post", {"200", "404", "409", "413", "422", "503"}),
        ("/models/{version}", "get", {"200", "404", "422"}),
        ("/models/{version}/promote", "post", {"200", "401", "404", "409", "422", "503"}),
        ("/readyz", "get", {"200", "503"}),
    ],
)
def test_openapi_documents_error_responses(document: dict, path: str, method: str, codes: set[str]) -> None:
    operation = document["paths"][path][method]

    assert set(operation["responses"]) == codes
    assert operation["summary"]


@pytest.mark.parametrize("schema", ["AugmentRequest", "GenerateRequest", "FidelityRequest", "RecommendRequest", "PromotionCreate"])
def test_openapi_request_schemas_have_examples(document: dict, schema: str) -> None:
    assert document["components"]["schemas"][schema]["examples"]
