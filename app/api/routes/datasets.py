"""Routes of the datasets resource: list the usable datasets and upload new ones."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import MultipartParseError

from rsir_engine.datasets import DATASETS, is_fetched

from app.api.deps import ApiKeyDep, SettingsDep
from app.api.errors import ApiError
from app.core.uploads import UPLOAD_FORMATS, MultipartError, UploadedDataset, UploadStore, UploadTooLargeError, receive_multipart
from app.schemas.common import ErrorPublic, ValidationErrorPublic
from app.schemas.datasets import DatasetPublic, DatasetsPublic

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["datasets"])

_COLUMN_FIELDS = ("user_col", "item_col", "time_col", "rating_col")
_FORM_FIELDS = ("name", "format", *_COLUMN_FIELDS)
_MAX_NAME_CHARS = 128

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "interactions as CSV (with a header), Parquet, or a RecBole .inter file; "
                        "one row per event with user, item and an integer timestamp",
                    },
                    "name": {"type": "string", "maxLength": _MAX_NAME_CHARS, "description": "label for the dataset; default: the file name without suffix"},
                    "format": {"type": "string", "enum": list(UPLOAD_FORMATS), "description": "default: taken from the file name's suffix"},
                    "user_col": {"type": "string", "default": "user_id", "description": "column with the user id"},
                    "item_col": {"type": "string", "default": "item_id", "description": "column with the item id"},
                    "time_col": {"type": "string", "default": "timestamp", "description": "column with the integer timestamp"},
                    "rating_col": {"type": "string", "description": "optional rating column, for min_rating in POST /rounds"},
                },
            }
        }
    },
}


def _public_upload(upload: UploadedDataset) -> DatasetPublic:
    return DatasetPublic(
        id=upload.id,
        name=upload.name,
        source="upload",
        format=upload.format,
        filename=upload.filename,
        size_bytes=upload.size_bytes,
        rows=upload.rows,
        users=upload.users,
        items=upload.items,
        fingerprint=upload.fingerprint,
        created_at=upload.created_at,
        columns={name: getattr(upload, name) for name in _COLUMN_FIELDS},
    )


@router.get("/datasets", response_model=DatasetsPublic)
def list_datasets(settings: SettingsDep) -> DatasetsPublic:
    """List the named public datasets and the uploaded ones."""
    public = [
        DatasetPublic(id=name, name=name, source="public", description=spec.description, fetched=is_fetched(name, settings.data_dir))
        for name, spec in sorted(DATASETS.items())
    ]
    uploads = [_public_upload(upload) for upload in UploadStore(settings.upload_dir).list()]
    return DatasetsPublic(data=[*public, *uploads], count=len(public) + len(uploads))


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetPublic,
    dependencies=[ApiKeyDep],
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses={
        401: {"model": ErrorPublic, "description": "Missing or wrong X-API-Key header."},
        413: {"model": ErrorPublic, "description": "The file is larger than RSIR_MAX_UPLOAD_BYTES."},
        422: {
            "model": ValidationErrorPublic,
            "description": "Not a multipart form with a file, an unknown form field, or a file that cannot be used "
            "(the message names the missing column or the bad row).",
        },
    },
)
async def upload_dataset(request: Request, settings: SettingsDep) -> DatasetPublic:
    """Upload an interaction file for round jobs."""
    try:
        received = await receive_multipart(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            settings.upload_dir,
            settings.max_upload_bytes,
        )
    except UploadTooLargeError as exc:
        logger.info("dataset upload rejected: %s", exc)
        raise ApiError(413, str(exc)) from None
    except (MultipartError, MultipartParseError) as exc:
        raise ApiError(422, f"invalid upload: {exc}") from None

    unknown = sorted(set(received.fields) - set(_FORM_FIELDS))
    name = received.fields.get("name") or None
    if unknown or (name is not None and len(name) > _MAX_NAME_CHARS):
        received.path.unlink(missing_ok=True)
        if unknown:
            raise ApiError(422, f"unknown form field(s) {', '.join(unknown)}; the form takes file, {', '.join(_FORM_FIELDS)}")
        raise ApiError(422, f"name has {len(name)} characters, more than {_MAX_NAME_CHARS}; send a shorter name")

    store = UploadStore(settings.upload_dir)
    upload = await run_in_threadpool(
        store.add,
        received,
        name=name,
        file_format=received.fields.get("format") or None,
        columns={column: received.fields.get(column) or None for column in _COLUMN_FIELDS},
    )
    return _public_upload(upload)
