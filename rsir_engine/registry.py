"""Store numbered model versions and named aliases in a plain directory.

Layout under the registry root::

    versions/v000001/        one checkpoint folder per version (see rsir_engine.checkpoint)
    versions/v000002/
    aliases.json             {"champion": 2, ...}
    alias_history.jsonl      one JSON object per alias move
    .lock                    taken with fcntl.flock by every write

Versions are immutable once published. Writers serialize on ``.lock``, so several
processes can publish into one root and still receive distinct version numbers. Readers
take no lock: a version folder appears by an atomic rename and ``aliases.json`` is
replaced atomically, so a reader sees either the old or the new state.

NOTE: ``fcntl.flock`` exists only on POSIX, and on network file systems such as NFS its
locks may not be shared between hosts.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from rsir_engine.checkpoint import (
    MANIFEST_FILE,
    read_checkpoint,
    read_manifest,
    write_checkpoint,
)
from rsir_engine.errors import (
    CheckpointCorruptError,
    ConfigError,
    RegistryError,
    VersionNotFoundError,
)

__all__ = [
    "ALIAS_PATTERN",
    "CHECKPOINT_DIR_ENV",
    "DEFAULT_ROOT",
    "AliasChange",
    "ModelRegistry",
    "ModelVersion",
]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR_ENV = "RSIR_CHECKPOINT_DIR"
DEFAULT_ROOT = Path("models")

# Aliases start with a letter, so no alias can look like a version number such as "3".
ALIAS_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")

_VERSIONS_DIR = "versions"
_ALIASES_FILE = "aliases.json"
_HISTORY_FILE = "alias_history.jsonl"
_LOCK_FILE = ".lock"
_VERSION_FOLDER = re.compile(r"v(\d+)")


def _version_folder_name(version: int) -> str:
    """Return the folder name of a version, zero-padded so folders sort in order."""
    return f"v{version:06d}"


def _optional_int(value: object) -> int | None:
    """Return ``value`` as an int, or None when it is absent or not an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


@dataclass(frozen=True)
class ModelVersion:
    """A published model version as read from the registry."""

    version: int
    path: Path
    # Left out of repr because item_ids can list millions of items.
    manifest: dict[str, Any] = field(repr=False)
    aliases: tuple[str, ...] = ()

    @property
    def parent_version(self) -> int | None:
        """Version this model was trained from, or None for a model trained from scratch."""
        return _optional_int(self.manifest.get("parent_version"))

    @property
    def round(self) -> int | None:
        """Self-improvement round that produced this model, when recorded."""
        return _optional_int(self.manifest.get("round"))

    @property
    def created_at(self) -> str | None:
        """UTC ISO-8601 time the checkpoint was written."""
        return self.manifest.get("created_at")

    @property
    def metrics(self) -> dict[str, Any]:
        """Evaluation metrics stored with the model, empty when none were recorded."""
        metrics = self.manifest.get("metrics")
        return metrics if isinstance(metrics, dict) else {}

    @property
    def dataset_name(self) -> str | None:
        """Name of the dataset the model was trained on."""
        dataset = self.manifest.get("dataset")
        return dataset.get("name") if isinstance(dataset, dict) else None


@dataclass(frozen=True)
class AliasChange:
    """One move of an alias, as recorded in ``alias_history.jsonl``."""

    alias: str
    from_version: int | None
    to_version: int
    at: str
    reason: str
    actor: str | None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object stored for this change."""
        return {
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "at": self.at,
            "reason": self.reason,
            "actor": self.actor,
        }


def _write_json_atomically(path: Path, payload: Any) -> None:
    """Replace ``path`` with ``payload`` as JSON so readers never see a partial file."""
    staging = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(staging, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


class ModelRegistry:
    """A file-based registry of numbered model versions and the aliases that point at them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / _VERSIONS_DIR
        self.versions_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModelRegistry:
        """Open the registry at ``$RSIR_CHECKPOINT_DIR``, or ``./models`` when it is unset."""
        env = os.environ if environ is None else environ
        return cls(env.get(CHECKPOINT_DIR_ENV) or DEFAULT_ROOT)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # ----- locking ---------------------------------------------------------------------

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Hold the registry's exclusive write lock for the duration of the block."""
        # flock locks belong to the open file description, so each call opens the file
        # anew. This also serializes threads of one process.
        with open(self.root / _LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # ----- versions ----------------------------------------------------------------------

    def _version_folders(self) -> dict[int, Path]:
        """Map each version number to its folder, including folders without a manifest."""
        folders: dict[int, Path] = {}
        for entry in self.versions_dir.iterdir():
            # Leftover ".vNNNNNN.tmp-*" folders from a crashed publish do not match.
            match = _VERSION_FOLDER.fullmatch(entry.name)
            if match and entry.is_dir():
                folders[int(match.group(1))] = entry
        return folders

    def _next_version(self) -> int:
        """Return the number after the highest version folder. Call only while holding the lock."""
        # Counting folders without a manifest too means a damaged folder is never reused.
        return max(self._version_folders(), default=0) + 1

    def _model_version(self, version: int, path: Path, aliases: Mapping[str, int]) -> ModelVersion:
        """Build a ModelVersion from a folder. Raises CheckpointCorruptError for a bad manifest."""
        pointing = tuple(sorted(name for name, target in aliases.items() if target == version))
        return ModelVersion(
            version=version, path=path, manifest=read_manifest(path), aliases=pointing
        )

    def list_versions(self) -> list[ModelVersion]:
        """Return every complete version in ascending order.

        Folders without a manifest (a publish that did not finish) are skipped, and so are
        folders with an unreadable manifest, which are logged as a warning.
        """
        aliases = self.aliases()
        versions: list[ModelVersion] = []
        for version, path in sorted(self._version_folders().items()):
            if not (path / MANIFEST_FILE).is_file():
                continue
            try:
                versions.append(self._model_version(version, path, aliases))
            except CheckpointCorruptError as exc:
                logger.warning("Skipping model version %d in %s: %s", version, self.root, exc)
        return versions

    def latest(self) -> ModelVersion | None:
        """Return the highest complete version, or None when nothing is published."""
        versions = self.list_versions()
        return versions[-1] if versions else None

    def _resolve(self, version: int | str, aliases: Mapping[str, int]) -> int:
        """Turn a version number, a digit string or an alias name into a version number."""
        if isinstance(version, bool):
            raise VersionNotFoundError(f"{version!r} is not a model version or alias.")
        if isinstance(version, int):
            return version
        if isinstance(version, str):
            text = version.strip()
            if text.isdigit():
                return int(text)
            if text in aliases:
                return aliases[text]
            known = ", ".join(sorted(aliases)) or "none"
            raise VersionNotFoundError(
                f"alias {text!r} not found in model registry {self.root}. Known aliases: {known}."
            )
        raise VersionNotFoundError(
            f"{version!r} is not a model version or alias. "
            "Pass an int, a digit string or an alias name."
        )

    def get(self, version: int | str) -> ModelVersion:
        """Look up a version by number (``3`` or ``"3"``) or alias name (``"champion"``).

        Raises VersionNotFoundError when no complete version matches, and
        CheckpointCorruptError when its manifest cannot be read.
        """
        aliases = self.aliases()
        number = self._resolve(version, aliases)
        folders = self._version_folders()
        path = folders.get(number)
        if path is None or not (path / MANIFEST_FILE).is_file():
            published = sorted(v for v, p in folders.items() if (p / MANIFEST_FILE).is_file())
            known = f"{published[0]}..{published[-1]}" if published else "none"
            via = ""
            if isinstance(version, str) and not version.strip().isdigit():
                via = f" (alias {version!r})"
            raise VersionNotFoundError(
                f"model version {number}{via} not found in registry {self.root}. "
                f"Published versions: {known}."
            )
        return self._model_version(number, path, aliases)

    def find_by_publish_key(self, key: str) -> ModelVersion | None:
        """Return the version published with ``publish_key`` ``key``, or None."""
        for model_version in self.list_versions():
            if model_version.manifest.get("publish_key") == key:
                return model_version
        return None

    def publish(
        self,
        state_dict: Mapping[str, torch.Tensor],
        manifest: Mapping[str, Any],
        *,
        publish_key: str | None = None,
    ) -> ModelVersion:
        """Store a checkpoint as the next version and return it.

        The manifest gets ``version`` and, when given, ``publish_key``. Publishing is
        idempotent per key: if a version already carries ``publish_key``, that version is
        returned and nothing is written, so a retried job does not create a duplicate.
        Raises ConfigError for an invalid manifest or weights (see write_checkpoint).
        """
        manifest_key = manifest.get("publish_key")
        if publish_key is not None and manifest_key is not None and manifest_key != publish_key:
            raise ConfigError(
                f"publish_key {publish_key!r} contradicts the manifest's publish_key "
                f"{manifest_key!r}."
            )
        key = publish_key if publish_key is not None else manifest_key

        with self._write_lock():
            if key is not None:
                existing = self.find_by_publish_key(key)
                if existing is not None:
                    logger.info(
                        "Publish key %r was already published as model version %d, "
                        "so nothing was written",
                        key,
                        existing.version,
                    )
                    return existing

            version = self._next_version()
            completed = dict(manifest)
            completed["version"] = version
            if key is not None:
                completed["publish_key"] = key
            path = self.versions_dir / _version_folder_name(version)
            try:
                write_checkpoint(path, state_dict, completed)
            except FileExistsError as exc:
                # Only a writer that ignores the lock can cause this.
                raise RegistryError(
                    f"version folder {path} appeared while publishing. Another process is "
                    "writing to this registry without the lock. Retry the publish."
                ) from exc

        logger.info(
            "Published model version %d to %s (parent_version=%s, publish_key=%r)",
            version,
            path,
            completed.get("parent_version"),
            key,
        )
        return self.get(version)

    def lineage(self, version: int | str) -> list[ModelVersion]:
        """Return the version, its parent, its grandparent and so on.

        The chain stops at a version without a parent, at a parent that is not in the
        registry, and before any version seen twice (a cycle from hand-edited manifests).
        """
        current: ModelVersion | None = self.get(version)
        chain: list[ModelVersion] = []
        seen: set[int] = set()
        while current is not None and current.version not in seen:
            chain.append(current)
            seen.add(current.version)
            parent = current.parent_version
            if parent is None:
                break
            try:
                current = self.get(parent)
            except VersionNotFoundError:
                logger.info(
                    "Lineage of model version %d stops at version %d, "
                    "whose parent %d is not in the registry",
                    chain[0].version,
                    current.version,
                    parent,
                )
                current = None
        return chain

    def load(
        self, version: int | str, *, device: str | torch.device = "cpu"
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Load and verify a version's weights and manifest (see read_checkpoint)."""
        return read_checkpoint(self.get(version).path, device=device)

    # ----- aliases ------------------------------------------------------------------------

    def aliases(self) -> dict[str, int]:
        """Return the current alias -> version mapping."""
        path = self.root / _ALIASES_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(
                f"cannot read {path} ({exc}). Restore it from alias_history.jsonl or delete it."
            ) from exc
        if not isinstance(data, dict) or not all(
            isinstance(name, str) and _optional_int(target) is not None
            for name, target in data.items()
        ):
            raise RegistryError(
                f"{path} must map alias names to version numbers. "
                "Restore it from alias_history.jsonl or delete it."
            )
        return {name: int(target) for name, target in data.items()}

    def set_alias(
        self,
        alias: str,
        version: int | str,
        *,
        reason: str = "",
        actor: str | None = None,
    ) -> AliasChange:
        """Point ``alias`` at an existing version and record the move in the history.

        ``version`` may itself be an alias, which is resolved once, now. Raises ConfigError
        for an invalid alias name and VersionNotFoundError for an unknown version.
        """
        if not isinstance(alias, str) or not ALIAS_PATTERN.fullmatch(alias):
            raise ConfigError(
                f"invalid alias name {alias!r}: use 1-64 characters from a-z, 0-9, '_' and '-', "
                "starting with a letter (an all-digit name would shadow a version number)."
            )

        with self._write_lock():
            target = self.get(version).version
            current = self.aliases()
            change = AliasChange(
                alias=alias,
                from_version=current.get(alias),
                to_version=target,
                at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                reason=reason,
                actor=actor,
            )
            current[alias] = target
            _write_json_atomically(self.root / _ALIASES_FILE, current)
            with open(self.root / _HISTORY_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(change.to_json(), sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

        logger.info(
            "Moved alias %r from model version %s to %d (actor=%s, reason=%r)",
            alias,
            change.from_version,
            target,
            actor,
            reason,
        )
        return change

    def alias_history(self, alias: str | None = None) -> list[AliasChange]:
        """Return recorded alias moves, oldest first, for one alias or for all.

        Lines that cannot be parsed (a write cut short by a crash) are skipped and logged.
        """
        path = self.root / _HISTORY_FILE
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

        changes: list[AliasChange] = []
        skipped = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                change = AliasChange(
                    alias=record["alias"],
                    from_version=record.get("from_version"),
                    to_version=int(record["to_version"]),
                    at=record["at"],
                    reason=record.get("reason", ""),
                    actor=record.get("actor"),
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                skipped += 1
                continue
            if alias is None or change.alias == alias:
                changes.append(change)
        if skipped:
            logger.warning("Skipped %d unreadable line(s) in %s", skipped, path)
        return changes
