"""Write and read model checkpoints: one folder with ``model.safetensors`` and ``manifest.json``.

The manifest describes everything needed to use the weights without the training run:
the architecture and its config, the raw item ids in internal-id order, the padding and
position conventions, and the dataset the model was trained on. Internal id ``i`` is
``item_ids[i - 1]``, because row 0 of the item embedding is padding. ``item_map_sha256`` ties the
weights to that id map, so a manifest edited by hand or paired with the wrong weights is
detected on read instead of silently scoring the wrong items.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rsir_engine.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    ConfigError,
)

__all__ = [
    "FORMAT_VERSION",
    "ITEM_EMBEDDING_KEY",
    "MANIFEST_FILE",
    "REQUIRED_MANIFEST_FIELDS",
    "WEIGHTS_FILE",
    "item_map_hash",
    "read_checkpoint",
    "read_manifest",
    "write_checkpoint",
]

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
ITEM_EMBEDDING_KEY = "item_embedding.weight"

# Field name -> accepted JSON type(s). Checked on write (ConfigError) and on read
# (CheckpointCorruptError), so anything write_checkpoint accepts read_checkpoint accepts too.
REQUIRED_MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "architecture": str,
    "architecture_config": dict,
    "item_ids": list,
    "item_map_sha256": str,
    "num_items": int,
    "padding": dict,
    "position_scheme": str,
    "dataset": dict,
    "created_at": str,
}
_REQUIRED_DATASET_KEYS = ("name", "fingerprint")

# Fields that write_checkpoint fills in itself, so callers need not supply them.
_FILLED_ON_WRITE = frozenset({"format_version", "item_map_sha256", "num_items", "created_at"})

_FIX_HINT = "Re-publish the model, or pick another version."


def _normalize_item_id(raw_id: object) -> int | str:
    """Convert one raw item id to a plain ``int`` or ``str`` so its JSON form is stable."""
    # bool is an Integral, but True would silently collide with item id 1.
    if isinstance(raw_id, bool):
        raise ConfigError(f"item id {raw_id!r} is a bool, but item ids must be int or str.")
    if isinstance(raw_id, str):
        return str(raw_id)
    if isinstance(raw_id, numbers.Integral):
        return int(raw_id)
    raise ConfigError(
        f"item id {raw_id!r} has type {type(raw_id).__name__}, but item ids must be int or str."
    )


def _normalize_item_ids(item_ids: Sequence[int | str]) -> list[int | str]:
    """Return the ids as a list of plain ints and strs, rejecting a bare string."""
    if isinstance(item_ids, (str, bytes)) or not isinstance(item_ids, Sequence):
        raise ConfigError(
            f"item_ids must be a list of int or str ids, got {type(item_ids).__name__}."
        )
    return [_normalize_item_id(raw_id) for raw_id in item_ids]


def item_map_hash(item_ids: Sequence[int | str]) -> str:
    """Return the SHA-256 hex digest of the item ids' canonical JSON in internal-id order.

    ``item_ids[0]`` is the raw id of internal id 1. The JSON keeps the type, so the
    int ``7`` and the str ``"7"`` hash differently. Raises ConfigError for ids that are
    neither int nor str.
    """
    canonical = json.dumps(
        _normalize_item_ids(item_ids), ensure_ascii=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _manifest_problems(
    manifest: Mapping[str, Any], skip: frozenset[str] = frozenset()
) -> list[str]:
    """List missing or wrongly typed required fields, one phrase per problem."""
    problems: list[str] = []
    for field, expected in REQUIRED_MANIFEST_FIELDS.items():
        if field in skip:
            continue
        if field not in manifest:
            problems.append(f"missing field {field!r}")
            continue
        value = manifest[field]
        # bool passes isinstance(..., int), but a bool count or version is never valid.
        if isinstance(value, bool) or not isinstance(value, expected):
            expected_name = expected.__name__ if isinstance(expected, type) else str(expected)
            problems.append(
                f"field {field!r} must be {expected_name}, got {type(value).__name__}"
            )

    dataset = manifest.get("dataset")
    if isinstance(dataset, dict):
        for key in _REQUIRED_DATASET_KEYS:
            if key not in dataset:
                problems.append(f"missing field 'dataset.{key}'")
    return problems


def _utc_now_iso() -> str:
    """Return the current UTC time as ISO-8601 with an explicit ``+00:00`` offset."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _prepare_manifest(
    state_dict: Mapping[str, torch.Tensor], manifest: Mapping[str, Any]
) -> dict[str, Any]:
    """Return a completed copy of ``manifest`` after checking it against ``state_dict``."""
    completed = dict(manifest)
    if "item_ids" not in completed:
        raise ConfigError("manifest is missing 'item_ids', the raw item ids in internal-id order.")

    item_ids = _normalize_item_ids(completed["item_ids"])
    if len(set(item_ids)) != len(item_ids):
        raise ConfigError(
            "manifest 'item_ids' contains duplicates, but each raw id must map to one row."
        )
    completed["item_ids"] = item_ids

    num_items = completed.setdefault("num_items", len(item_ids))
    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items != len(item_ids):
        raise ConfigError(
            f"manifest 'num_items' is {num_items!r} but 'item_ids' has {len(item_ids)} entries."
        )

    completed["format_version"] = FORMAT_VERSION
    completed["item_map_sha256"] = item_map_hash(item_ids)
    completed.setdefault("created_at", _utc_now_iso())

    problems = _manifest_problems(completed, skip=_FILLED_ON_WRITE)
    if problems:
        raise ConfigError("invalid checkpoint manifest: " + "; ".join(problems) + ".")

    embedding = state_dict.get(ITEM_EMBEDDING_KEY)
    if embedding is None:
        raise ConfigError(f"state_dict has no {ITEM_EMBEDDING_KEY!r} tensor.")
    if embedding.dim() != 2 or embedding.shape[0] != num_items + 1:
        raise ConfigError(
            f"{ITEM_EMBEDDING_KEY!r} has shape {tuple(embedding.shape)}, expected "
            f"({num_items + 1}, hidden): num_items={num_items} plus the padding row 0."
        )
    return completed


def _tensors_for_saving(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return detached, contiguous CPU tensors, cloning any that share storage with another."""
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"state_dict entry {name!r} is a {type(value).__name__}, not a torch.Tensor."
            )
        tensor = value.detach().to("cpu").contiguous()
        # safetensors (0.8) save_file rejects tensors that share memory, such as an output layer
        # tied to the item embedding. A copy stores both, and load_state_dict re-ties them later.
        storage_ptr = tensor.untyped_storage().data_ptr()
        if storage_ptr in seen_storages:
            tensor = tensor.clone()
        seen_storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    return tensors


def _fsync_path(path: Path) -> None:
    """Flush a file's or a folder's contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(
    directory: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    manifest: Mapping[str, Any],
) -> Path:
    """Write weights and manifest to a new checkpoint folder atomically and return its path.

    The manifest is completed with ``format_version``, ``item_map_sha256`` and, when
    absent, ``num_items`` and ``created_at``. Files are written to a hidden sibling folder,
    synced, then renamed to ``directory``, so readers never see a half-written checkpoint.
    Raises ConfigError for an invalid manifest or an embedding that does not match it, and
    FileExistsError when ``directory`` already exists.
    """
    target = Path(directory)
    if target.exists():
        raise FileExistsError(f"checkpoint folder {target} already exists. Choose a new folder.")

    completed = _prepare_manifest(state_dict, manifest)
    tensors = _tensors_for_saving(state_dict)
    try:
        manifest_text = json.dumps(completed, indent=2, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"manifest cannot be written as JSON: {exc}") from exc

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        weights_path = staging / WEIGHTS_FILE
        save_file(
            tensors,
            str(weights_path),
            metadata={
                "format_version": str(FORMAT_VERSION),
                "item_map_sha256": completed["item_map_sha256"],
            },
        )
        _fsync_path(weights_path)

        with open(staging / MANIFEST_FILE, "w", encoding="utf-8") as handle:
            handle.write(manifest_text)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_path(staging)

        # Checked again because another writer may have created it meanwhile, and
        # os.rename silently replaces an empty target folder on POSIX.
        if target.exists():
            raise FileExistsError(
                f"checkpoint folder {target} already exists. Choose a new folder."
            )
        try:
            os.rename(staging, target)
        except OSError as exc:
            if target.exists():
                raise FileExistsError(
                    f"checkpoint folder {target} already exists. Choose a new folder."
                ) from exc
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    _fsync_path(target.parent)
    return target


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Parse a checkpoint's ``manifest.json`` without checking its fields or the weights.

    Raises CheckpointCorruptError when the file is missing or not a JSON object.
    """
    folder = Path(directory)
    manifest_path = folder / MANIFEST_FILE
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CheckpointCorruptError(
            f"checkpoint {folder} has no {MANIFEST_FILE}. {_FIX_HINT}"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointCorruptError(
            f"cannot read {manifest_path}: {exc}. {_FIX_HINT}"
        ) from exc

    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointCorruptError(
            f"{manifest_path} is not valid JSON ({exc}). {_FIX_HINT}"
        ) from exc
    if not isinstance(manifest, dict):
        raise CheckpointCorruptError(
            f"{manifest_path} must contain a JSON object, got {type(manifest).__name__}. "
            f"{_FIX_HINT}"
        )
    return manifest


def _check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Raise if the manifest lacks required fields or disagrees with its own id map."""
    problems = _manifest_problems(manifest)
    if problems:
        raise CheckpointCorruptError(
            f"checkpoint {folder} has an invalid manifest: {'; '.join(problems)}. {_FIX_HINT}"
        )

    if manifest["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {folder} has format_version {manifest['format_version']}, but this "
            f"rsir_engine reads up to {FORMAT_VERSION}. Upgrade rsir_engine, or pick another "
            "version."
        )

    try:
        actual_hash = item_map_hash(manifest["item_ids"])
    except ConfigError as exc:
        raise CheckpointCorruptError(
            f"checkpoint {folder} has invalid item_ids: {exc} {_FIX_HINT}"
        ) from exc
    if actual_hash != manifest["item_map_sha256"]:
        raise CheckpointMismatchError(
            f"checkpoint {folder}: id map hash mismatch, item_ids hash to {actual_hash} but the "
            f"manifest records {manifest['item_map_sha256']}. The item ids were changed after "
            f"training. {_FIX_HINT}"
        )

    num_items = manifest["num_items"]
    if num_items != len(manifest["item_ids"]):
        raise CheckpointMismatchError(
            f"checkpoint {folder}: manifest num_items is {num_items} but item_ids has "
            f"{len(manifest['item_ids'])} entries. {_FIX_HINT}"
        )


def _load_weights(
    folder: Path, device: str | torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load all tensors and the safetensors header metadata from the weights file."""
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointCorruptError(f"checkpoint {folder} has no {WEIGHTS_FILE}. {_FIX_HINT}")

    try:
        with safe_open(str(weights_path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        # A truncated or overwritten file fails here with a header or size error.
        raise CheckpointCorruptError(
            f"cannot parse {weights_path}, the file is truncated or corrupt ({exc}). {_FIX_HINT}"
        ) from exc
    return tensors, metadata


def read_checkpoint(
    directory: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load and verify a checkpoint folder, returning ``(state_dict, manifest)``.

    Raises CheckpointCorruptError when a file is missing or unreadable or a required
    manifest field is missing, and CheckpointMismatchError when the id-map hash, the item
    count or the item embedding rows disagree with the manifest.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise CheckpointCorruptError(f"checkpoint folder {folder} does not exist. {_FIX_HINT}")

    manifest = read_manifest(folder)
    _check_manifest(folder, manifest)
    tensors, metadata = _load_weights(folder, device)

    embedding = tensors.get(ITEM_EMBEDDING_KEY)
    if embedding is None:
        raise CheckpointCorruptError(
            f"checkpoint {folder}: {WEIGHTS_FILE} has no {ITEM_EMBEDDING_KEY!r} tensor. {_FIX_HINT}"
        )
    expected_rows = manifest["num_items"] + 1
    if embedding.dim() != 2 or embedding.shape[0] != expected_rows:
        raise CheckpointMismatchError(
            f"checkpoint {folder}: vocabulary mismatch, {ITEM_EMBEDDING_KEY!r} has "
            f"{embedding.shape[0] if embedding.dim() else 0} rows but the manifest has "
            f"num_items={manifest['num_items']}, which needs {expected_rows} rows "
            f"(one padding row). {_FIX_HINT}"
        )

    # The weights file records the id-map hash it was saved with, which catches a
    # model.safetensors of the same size copied in from another checkpoint. The row count
    # is checked first because its message is the more specific one.
    weights_hash = metadata.get("item_map_sha256")
    if weights_hash is not None and weights_hash != manifest["item_map_sha256"]:
        raise CheckpointMismatchError(
            f"checkpoint {folder}: id map hash mismatch, {WEIGHTS_FILE} was saved with "
            f"{weights_hash} but the manifest records {manifest['item_map_sha256']}. {_FIX_HINT}"
        )
    return tensors, manifest
