"""Map exceptions to HTTP responses, in one place.

Errors this service raises itself have the body ``{"detail": {"message": ...}}``,
plus ``unknown_items`` when raw item ids are not in the model's catalogue. Request
validation errors keep FastAPI's ``{"detail": [{"loc", "msg", "type", "input"}]}``.

=========================================  ======
exception                                  status
=========================================  ======
``ApiError``                               its own
``VersionNotFoundError``                   404
``CheckpointError``                        409
``RegistryError``, ``RoundCancelled``      409
``BodyTooLargeError``                      413
``UnknownItemsError``                      422
``DataError``, ``ConfigError``             422
``ModelNotReadyError``                     503
``DatasetFetchError``                      503
``redis`` connection and timeout errors    503
=========================================  ======
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from rsir_engine.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DatasetFetchError,
    RegistryError,
    RoundCancelled,
    UnknownItemsError,
    VersionNotFoundError,
)

from app.schemas.common import ErrorPublic, ValidationErrorPublic
from app.serving import ModelNotReadyError

__all__ = [
    "ApiError",
    "BodyTooLargeError",
    "error_responses",
    "install_exception_handlers",
    "invalid_field",
]

logger = logging.getLogger(__name__)

# Longest rejected list or string echoed back in a validation error, so a 10,000-item
# history is not sent back whole.
_MAX_ECHOED_ITEMS = 20
_MAX_ECHOED_CHARS = 200


class ApiError(HTTPException):
    """An HTTP error with the body ``{"detail": {"message": ..., **extra}}``."""

    def __init__(self, status_code: int, message: str, **extra: Any) -> None:
        super().__init__(status_code=status_code, detail={"message": message, **extra})


class BodyTooLargeError(ApiError):
    """Raised when a request body is larger than the configured limit."""

    def __init__(self, size: int | None, limit: int, setting: str) -> None:
        size_text = f"is {size} bytes, which is" if size is not None else "is"
        super().__init__(
            413,
            f"request body {size_text} over the limit of {limit} bytes ({setting}); "
            "send fewer users or items per request, or raise the limit",
        )


def invalid_field(loc: Sequence[str | int], message: str, value: Any) -> RequestValidationError:
    """Build a 422 for one field, in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": tuple(loc), "msg": message, "input": value}])


_DESCRIPTIONS = {
    401: "Missing or wrong X-API-Key header.",
    404: "Unknown model version or alias.",
    409: "Conflict: the checkpoint cannot be loaded, or the registry rejected the change.",
    413: "Request body over the size limit.",
    422: "Invalid request: a list of invalid fields, or a message with the unknown item ids.",
    503: "Not ready: no model loaded yet, or Redis unreachable.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Describe error responses for a route's ``responses=``, with the body schema of each."""
    return {
        code: {"model": ValidationErrorPublic if code == 422 else ErrorPublic, "description": _DESCRIPTIONS[code]}
        for code in codes
    }


def _error(status_code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"detail": {"message": message, **extra}})


def _shorten(value: Any) -> Any:
    """Shorten a long rejected list or string before echoing it."""
    if isinstance(value, list) and len(value) > _MAX_ECHOED_ITEMS:
        return [*value[:_MAX_ECHOED_ITEMS], f"... {len(value) - _MAX_ECHOED_ITEMS} more"]
    if isinstance(value, str) and len(value) > _MAX_ECHOED_CHARS:
        return value[:_MAX_ECHOED_CHARS] + f"... ({len(value)} characters)"
    return value


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    issues = []
    for error in exc.errors():
        issue = {key: error[key] for key in ("loc", "msg", "type") if key in error}
        issue["input"] = _shorten(error.get("input"))
        issues.append(issue)
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(issues)})


async def _body_too_large(request: Request, exc: BodyTooLargeError) -> JSONResponse:
    logger.info("%s %s: rejected with 413: %s", request.method, request.url.path, exc.detail["message"])
    return JSONResponse(status_code=413, content={"detail": exc.detail}, headers={"Connection": "close"})


async def _unknown_items(request: Request, exc: UnknownItemsError) -> JSONResponse:
    return _error(422, str(exc), unknown_items=jsonable_encoder(exc.unknown))


def _mapped(status_code: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return _error(status_code, str(exc))

    return handler


async def _model_not_ready(request: Request, exc: ModelNotReadyError) -> JSONResponse:
    return _error(503, f"no model is being served: {exc}")


async def _redis_unavailable(request: Request, exc: redis.exceptions.RedisError) -> JSONResponse:
    logger.warning("%s %s: Redis unreachable: %s", request.method, request.url.path, exc)
    return _error(503, f"Redis is unreachable ({exc}); check RSIR_REDIS_URL and that the server runs, then retry")


def install_exception_handlers(app: FastAPI) -> None:
    """Register every exception-to-HTTP mapping on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(BodyTooLargeError, _body_too_large)
    app.add_exception_handler(UnknownItemsError, _unknown_items)
    app.add_exception_handler(DataError, _mapped(422))
    app.add_exception_handler(ConfigError, _mapped(422))
    app.add_exception_handler(VersionNotFoundError, _mapped(404))
    app.add_exception_handler(CheckpointError, _mapped(409))
    app.add_exception_handler(RegistryError, _mapped(409))
    app.add_exception_handler(RoundCancelled, _mapped(409))
    app.add_exception_handler(DatasetFetchError, _mapped(503))
    app.add_exception_handler(ModelNotReadyError, _model_not_ready)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_unavailable)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_unavailable)
