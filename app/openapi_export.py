"""Write the service's OpenAPI document as YAML (``rsir openapi --output openapi.yaml``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI

__all__ = ["openapi_document", "render_openapi", "write_openapi"]


def openapi_document(app: FastAPI | None = None) -> dict[str, Any]:
    """Return the app's OpenAPI document as plain JSON types (no tuples, no pydantic objects)."""
    if app is None:
        from app.main import create_app

        app = create_app()
    return json.loads(json.dumps(app.openapi()))


def render_openapi(app: FastAPI | None = None) -> str:
    """Render the OpenAPI document as YAML with sorted keys, so the text changes only when the API does."""
    return yaml.safe_dump(openapi_document(app), sort_keys=True, allow_unicode=True, width=120)


def write_openapi(path: str | Path, app: FastAPI | None = None) -> Path:
    """Write the OpenAPI document of ``app`` (default: the app built from the RSIR_* environment) to ``path``."""
    target = Path(path)
    target.write_text(render_openapi(app), encoding="utf-8")
    return target
