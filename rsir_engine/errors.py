"""Exceptions raised by the RSIR engine.

Every exception the engine raises on purpose derives from ``RSIRError``::

    RSIRError
    +-- ConfigError              a parameter is out of range or contradicts another
    +-- DataError                input interactions or sequences cannot be used
    |   +-- EmptyInputError      nothing left to work on (no rows, no users, empty sequence)
    |   +-- UnknownItemsError    raw item ids that the item map does not contain
    +-- DatasetFetchError        a named dataset could not be downloaded or extracted
    +-- CheckpointError          a checkpoint cannot be used
    |   +-- CheckpointCorruptError   files missing, truncated or unreadable
    |   +-- CheckpointMismatchError  weights disagree with the manifest (vocabulary, id map)
    +-- RegistryError            the model registry rejects a request
        +-- VersionNotFoundError an unknown version or alias
    +-- RoundCancelled           a running round loop was asked to stop at a safe point
"""

from __future__ import annotations

__all__ = [
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "DataError",
    "DatasetFetchError",
    "EmptyInputError",
    "RSIRError",
    "RegistryError",
    "RoundCancelled",
    "UnknownItemsError",
    "VersionNotFoundError",
]


class RSIRError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(RSIRError, ValueError):
    """Raised when a configuration value is out of range or contradicts another value."""


class DataError(RSIRError, ValueError):
    """Raised when interactions or sequences cannot be used as given."""


class EmptyInputError(DataError):
    """Raised when input has no rows, no users or an empty sequence where one is required."""


class UnknownItemsError(DataError):
    """Raised when raw item ids are not in the model's item map.

    ``unknown`` lists the offending raw ids in the order they were first seen.
    """

    def __init__(self, unknown: list, message: str | None = None) -> None:
        self.unknown = list(unknown)
        shown = ", ".join(repr(item) for item in self.unknown[:20])
        more = f" and {len(self.unknown) - 20} more" if len(self.unknown) > 20 else ""
        super().__init__(
            message
            or f"{len(self.unknown)} item id(s) are not in the model's catalogue: {shown}{more}. "
            "Remove them, or drop them with --drop-unknown (CLI) or \"drop_unknown\": true (API)."
        )


class DatasetFetchError(RSIRError):
    """Raised when a named dataset cannot be downloaded, verified or extracted."""


class CheckpointError(RSIRError):
    """Base class of errors about a checkpoint on disk."""


class CheckpointCorruptError(CheckpointError):
    """Raised when checkpoint files are missing, truncated or cannot be parsed."""


class CheckpointMismatchError(CheckpointError):
    """Raised when the weights disagree with the manifest (vocabulary size or id-map hash)."""


class RegistryError(RSIRError):
    """Raised when the model registry rejects a request."""


class VersionNotFoundError(RegistryError, LookupError):
    """Raised when a version or alias does not exist in the registry."""


class RoundCancelled(RSIRError):
    """Raised inside the round loop when a caller asked it to stop at the next safe point."""
