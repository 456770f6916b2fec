"""Augment caller-supplied user sequences given in raw item ids, and write the results.

This is the shared path of ``rsir augment`` and the service's ``/augment``:
map raw ids through the model's item map, cut each history to the model's
``max_len`` most recent items, generate, filter, and map the survivors back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsir_engine.augmentation import AugmentationStats, select_augmentations
from rsir_engine.errors import DataError, EmptyInputError, UnknownItemsError
from rsir_engine.generation import GeneratedSequence, GenerationConfig, generate
from rsir_engine.model_io import LoadedModel

__all__ = [
    "Augmentation",
    "AugmentOutcome",
    "PreparedUsers",
    "augment_users",
    "prepare_users",
    "write_augmentations_inter",
    "write_augmentations_jsonl",
]


@dataclass
class PreparedUsers:
    """User histories mapped to internal ids, with what was cut or dropped on the way."""

    user_ids: list[Any]
    histories: list[list[int]]  # internal ids, at most the model's max_len each
    truncated_users: int = 0  # histories cut to their most recent max_len items
    unknown_items: list[Any] = field(default_factory=list)  # distinct raw ids dropped
    dropped_items: int = 0  # events dropped because their item was unknown
    skipped_users: list[Any] = field(default_factory=list)  # users left with no known item


def prepare_users(
    loaded: LoadedModel, users: Sequence[tuple[Any, Sequence[Any]]], *, drop_unknown: bool = False
) -> PreparedUsers:
    """Map each ``(user_id, raw_items)`` history to internal ids and cut it to ``max_len``.

    Raises:
        EmptyInputError: no users, or a user with an empty history.
        UnknownItemsError: unknown raw ids (all of them listed) unless ``drop_unknown``.
    """
    if not users:
        raise EmptyInputError("no users were given; send at least one user with one item")
    max_len = loaded.model.config.max_len
    prepared = PreparedUsers(user_ids=[], histories=[])
    unknown_all: list[Any] = []
    for user_id, raw_items in users:
        if len(raw_items) == 0:
            raise EmptyInputError(f"user {user_id!r} has an empty sequence; send at least one item")
        try:
            internal, unknown = loaded.item_map.to_internal(raw_items, drop_unknown=True)
        except DataError as exc:
            raise DataError(f"user {user_id!r}: {exc}") from None
        unknown_all.extend(unknown)
        prepared.dropped_items += len(unknown)
        if not internal:
            prepared.skipped_users.append(user_id)
            continue
        if len(internal) > max_len:
            internal = internal[-max_len:]
            prepared.truncated_users += 1
        prepared.user_ids.append(user_id)
        prepared.histories.append(internal)
    prepared.unknown_items = list(dict.fromkeys(unknown_all))
    if prepared.unknown_items and not drop_unknown:
        raise UnknownItemsError(prepared.unknown_items)
    if not prepared.histories:
        raise EmptyInputError("no user has any item the model knows, so nothing can be generated")
    return prepared


@dataclass
class Augmentation:
    """One kept synthetic sequence in raw ids with its per-step fidelity record."""

    user_id: Any
    items: list[Any]
    stop_reason: str
    steps: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """Return the augmentation as a JSON-ready dict."""
        return {"user_id": self.user_id, "items": self.items, "stop_reason": self.stop_reason, "steps": self.steps}


@dataclass
class AugmentOutcome:
    """Kept augmentations of one call and the counts behind them."""

    augmentations: list[Augmentation]
    stats: AugmentationStats
    prepared: PreparedUsers
    model_version: int | None


def _to_raw(loaded: LoadedModel, user_id: Any, sequence: GeneratedSequence) -> Augmentation:
    steps = []
    for step in sequence.steps:
        record = step.to_dict()
        record["item"] = loaded.item_map.to_raw([step.item])[0] if step.item is not None else None
        steps.append(record)
    return Augmentation(
        user_id=user_id,
        items=loaded.item_map.to_raw(sequence.items),
        stop_reason=sequence.stop_reason.value,
        steps=steps,
    )


def augment_users(
    loaded: LoadedModel,
    users: Sequence[tuple[Any, Sequence[Any]]],
    config: GenerationConfig,
    *,
    drop_unknown: bool = False,
    filter_sequences: bool = True,
) -> AugmentOutcome:
    """Generate for every user and keep what passes, is long enough and is new.

    With ``filter_sequences`` false every generated sequence is returned,
    which is what a caller wants when ``config.fidelity`` is off.
    """
    prepared = prepare_users(loaded, users, drop_unknown=drop_unknown)
    generated = generate(loaded.model, prepared.histories, config)
    if filter_sequences:
        kept, stats = select_augmentations(generated, min_len=config.min_len, existing=prepared.histories)
    else:
        kept, stats = select_augmentations(generated, min_len=1)
    augmentations = [_to_raw(loaded, prepared.user_ids[seq.seed_index], seq) for seq in kept]
    return AugmentOutcome(augmentations=augmentations, stats=stats, prepared=prepared, model_version=loaded.version)


def write_augmentations_jsonl(augmentations: Iterable[Augmentation], path: str | Path) -> int:
    """Write one JSON object per augmentation and return how many were written."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for augmentation in augmentations:
            handle.write(json.dumps(augmentation.to_dict()) + "\n")
            count += 1
    return count


def write_augmentations_inter(augmentations: Iterable[Augmentation], path: str | Path, *, prefix: str = "aug") -> int:
    """Write augmentations as a RecBole atomic ``.inter`` file, one pseudo-user each.

    Pseudo-user ids are ``<prefix>_<seed user>_<n>``; the timestamp is the
    item's position in the sequence, which keeps the generated order.
    """
    count = 0
    per_user: dict[str, int] = {}
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for augmentation in augmentations:
            seed = str(augmentation.user_id)
            per_user[seed] = per_user.get(seed, 0) + 1
            pseudo_user = f"{prefix}_{seed}_{per_user[seed]}"
            for position, item in enumerate(augmentation.items):
                handle.write(f"{pseudo_user}\t{item}\t{position}\n")
            count += 1
    return count
