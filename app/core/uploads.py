"""Receive, validate and keep uploaded interaction files under the upload folder.

Each upload ``<id>`` is two files in ``settings.upload_dir``: the data as sent
(``<id>.csv``, ``<id>.parquet`` or ``<id>.inter``) and ``<id>.json`` with its metadata.
The request body is parsed as it arrives and written to disk chunk by chunk, so neither
memory nor the temporary folder ever contains more than ``max_upload_bytes`` of it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header

from rsir_engine.data import SequenceDataset, build_dataset, filter_interactions, load_interactions
from rsir_engine.errors import DataError

__all__ = [
    "UPLOAD_FORMATS",
    "MultipartError",
    "ReceivedUpload",
    "UploadStore",
    "UploadTooLargeError",
    "UploadedDataset",
    "open_upload",
    "receive_multipart",
]

logger = logging.getLogger(__name__)

UPLOAD_FORMATS = ("csv", "parquet", "inter")
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".inter": "inter"}
_UPLOAD_ID = re.compile(r"up-[0-9a-f]{12}")
# Form fields other than the file are short names; this bounds each one in bytes.
_MAX_FIELD_BYTES = 1024
_FILE_FIELD = "file"


class UploadTooLargeError(Exception):
    """Raised when an upload exceeds ``max_upload_bytes``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"the upload is larger than the limit of {limit} bytes (RSIR_MAX_UPLOAD_BYTES); "
            "send a smaller file or raise the limit"
        )


class MultipartError(ValueError):
    """Raised when the request body is not a usable multipart/form-data upload."""


@dataclass
class UploadedDataset:
    """Metadata of one uploaded interaction file."""

    id: str
    name: str
    format: str
    filename: str  # file name the client sent
    size_bytes: int
    rows: int
    users: int
    items: int
    interactions: int
    fingerprint: str
    created_at: str  # UTC ISO-8601
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    rating_col: str | None = None
    path: Path = field(default=Path(), repr=False)  # data file on disk; not stored in the JSON

    def to_json(self) -> dict[str, Any]:
        """Return the metadata stored beside the file."""
        data = asdict(self)
        data.pop("path")
        return data


@dataclass
class ReceivedUpload:
    """A multipart body written to disk: the file part and the other form fields."""

    path: Path
    filename: str
    size_bytes: int
    fields: dict[str, str]


class _PartCollector:
    """Callbacks for python-multipart that write the file part to disk as it arrives."""

    def __init__(self, destination: Path, max_bytes: int) -> None:
        self.destination = destination
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self._handle: IO[bytes] | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()
        self._is_file = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._value = bytearray()
        self._is_file = False

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if self._name == _FILE_FIELD or filename is not None:
            if self._handle is not None:
                raise MultipartError("the form has more than one file; send one file in the field 'file'")
            self._is_file = True
            self.filename = (filename or b"upload").decode("utf-8", "replace")
            self._handle = open(self.destination, "wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise UploadTooLargeError(self.max_bytes)
            assert self._handle is not None
            self._handle.write(chunk)
            return
        self._value += chunk
        if len(self._value) > _MAX_FIELD_BYTES:
            raise MultipartError(f"form field {self._name!r} is longer than {_MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._is_file:
            assert self._handle is not None
            self._handle.flush()
            return
        if self._name:
            self.fields[self._name] = self._value.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


async def receive_multipart(
    content_type: str | None,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    directory: Path,
    max_bytes: int,
) -> ReceivedUpload:
    """Parse a multipart/form-data body and write its ``file`` part under ``directory``.

    Raises UploadTooLargeError as soon as the file part (or a declared Content-Length)
    passes ``max_bytes``, and MultipartError for a body that is not a form with a file.
    """
    mime, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise MultipartError(
            f"expected a multipart/form-data body with a boundary, got content type {content_type!r}; "
            "send the file as the form field 'file'"
        )
    # Part headers and short form fields come on top of the file. The slack keeps a file of
    # exactly max_bytes acceptable, and far larger bodies are still rejected unread.
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes + 64 * 1024:
        raise UploadTooLargeError(max_bytes)

    directory.mkdir(parents=True, exist_ok=True)
    destination = directory / f".incoming-{uuid.uuid4().hex}"
    collector = _PartCollector(destination, max_bytes)
    parser = MultipartParser(boundary, collector.callbacks())
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except BaseException:
        collector.close()
        destination.unlink(missing_ok=True)
        raise
    collector.close()
    if collector.filename is None:
        destination.unlink(missing_ok=True)
        raise MultipartError("the form has no file; send the interactions as the form field 'file'")
    return ReceivedUpload(path=destination, filename=collector.filename, size_bytes=collector.size, fields=collector.fields)


def detect_format(filename: str, requested: str | None) -> str:
    """Return the upload's format: the one requested, or the one its file name ends with."""
    if requested:
        fmt = requested.strip().lower()
        if fmt not in UPLOAD_FORMATS:
            raise DataError(f"format {requested!r} is not supported; use one of {', '.join(UPLOAD_FORMATS)}")
        return fmt
    fmt = _SUFFIX_FORMATS.get(Path(filename).suffix.lower())
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {filename!r} from its name; name it .csv, .parquet or .inter, "
            f"or send the form field 'format' ({', '.join(UPLOAD_FORMATS)})"
        )
    return fmt


def open_upload(upload: UploadedDataset, *, min_rating: float | None = None, k_core: int | None = None) -> SequenceDataset:
    """Load an uploaded file with its recorded columns and build the dataset."""
    frame = load_interactions(
        upload.path,
        file_format=upload.format,
        user_col=upload.user_col,
        item_col=upload.item_col,
        time_col=upload.time_col,
        rating_col=upload.rating_col,
    )
    frame = filter_interactions(frame, min_rating=min_rating, k_core=k_core)
    return build_dataset(frame, name=upload.name)


class UploadStore:
    """The uploaded datasets in one folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def list(self) -> list[UploadedDataset]:
        """Return every upload, oldest first."""
        if not self.root.is_dir():
            return []
        uploads = [self.get(path.stem) for path in self.root.glob("up-*.json")]
        return sorted((upload for upload in uploads if upload is not None), key=lambda upload: upload.created_at)

    def get(self, upload_id: str) -> UploadedDataset | None:
        """Return an upload's metadata, or None when there is no such upload."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            return None
        meta_path = self.root / f"{upload_id}.json"
        try:
            data = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("upload %s: unreadable metadata %s: %s", upload_id, meta_path, exc)
            return None
        upload = UploadedDataset(**data)
        upload.path = self.root / f"{upload_id}.{upload.format}"
        return upload

    def require(self, upload_id: str) -> UploadedDataset:
        """Return an upload's metadata or raise DataError naming the known datasets."""
        upload = self.get(upload_id)
        if upload is None:
            known = ", ".join(item.id for item in self.list()) or "none"
            raise DataError(f"dataset {upload_id!r} is not an uploaded dataset; uploaded: {known}")
        return upload

    def add(self, received: ReceivedUpload, *, name: str | None, file_format: str | None, columns: dict[str, str | None]) -> UploadedDataset:
        """Validate a received file and keep it as a new upload.

        Raises DataError naming the bad column or row; the file is deleted then.
        """
        try:
            fmt = detect_format(received.filename, file_format)
            user_col = columns.get("user_col") or "user_id"
            item_col = columns.get("item_col") or "item_id"
            time_col = columns.get("time_col") or "timestamp"
            rating_col = columns.get("rating_col") or None
            frame = load_interactions(
                received.path,
                file_format=fmt,
                user_col=user_col,
                item_col=item_col,
                time_col=time_col,
                rating_col=rating_col,
            )
            label = name or Path(received.filename).stem or "upload"
            dataset = build_dataset(frame, name=label)
        except Exception as exc:
            received.path.unlink(missing_ok=True)
            if isinstance(exc, DataError):
                raise DataError(str(exc).replace(received.path.name, received.filename)) from None
            # pandas and pyarrow raise their own errors for files they cannot parse at all.
            raise DataError(f"{received.filename} could not be read as {file_format or 'a supported format'}: {exc}") from None

        upload_id = f"up-{uuid.uuid4().hex[:12]}"
        upload = UploadedDataset(
            id=upload_id,
            name=label,
            format=fmt,
            filename=received.filename,
            size_bytes=received.size_bytes,
            rows=len(frame),
            users=dataset.num_users,
            items=dataset.num_items,
            interactions=dataset.num_interactions,
            fingerprint=dataset.fingerprint,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            user_col=user_col,
            item_col=item_col,
            time_col=time_col,
            rating_col=rating_col,
            path=self.root / f"{upload_id}.{fmt}",
        )
        os.replace(received.path, upload.path)
        staging = self.root / f".{upload_id}.json.tmp"
        staging.write_text(json.dumps(upload.to_json(), indent=2), encoding="utf-8")
        # The metadata appears last, so a listed upload always has its data file.
        staging.replace(self.root / f"{upload_id}.json")
        logger.info(
            "upload %s: kept %s (%s, %d rows, %d users, %d items, fingerprint %s)",
            upload_id,
            received.filename,
            fmt,
            upload.rows,
            upload.users,
            upload.items,
            upload.fingerprint[:12],
        )
        return upload
