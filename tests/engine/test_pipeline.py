"""Tests for augmenting caller-supplied users in raw ids and writing the results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsir_engine.data import build_dataset, load_interactions
from rsir_engine.errors import EmptyInputError, UnknownItemsError
from rsir_engine.generation import GenerationConfig
from rsir_engine.model_io import LoadedModel
from rsir_engine.pipeline import (
    Augmentation,
    augment_users,
    prepare_users,
    write_augmentations_inter,
    write_augmentations_jsonl,
)


def test_prepare_users_maps_raw_ids(loaded_model: LoadedModel) -> None:
    prepared = prepare_users(loaded_model, [("alice", [3, "4", 5])])

    assert prepared.user_ids == ["alice"]
    assert prepared.histories == [loaded_model.item_map.to_internal([3, 4, 5])[0]]
    assert prepared.truncated_users == 0


def test_prepare_users_empty_sequence(loaded_model: LoadedModel) -> None:
    with pytest.raises(EmptyInputError, match="bob"):
        prepare_users(loaded_model, [("alice", [1, 2]), ("bob", [])])


def test_prepare_users_no_users(loaded_model: LoadedModel) -> None:
    with pytest.raises(EmptyInputError):
        prepare_users(loaded_model, [])


def test_prepare_users_cuts_to_most_recent(loaded_model: LoadedModel) -> None:
    max_len = loaded_model.model.config.max_len
    long_history = list(range(1, max_len + 4))

    prepared = prepare_users(loaded_model, [("long", long_history), ("short", [1, 2])])

    assert prepared.histories[0] == loaded_model.item_map.to_internal(long_history[-max_len:])[0]
    assert prepared.histories[1] == loaded_model.item_map.to_internal([1, 2])[0]
    assert prepared.truncated_users == 1


def test_prepare_users_lists_every_unknown_id(loaded_model: LoadedModel) -> None:
    unknown = [f"new{index}" for index in range(25)]
    users = [("a", [1, *unknown[:15], 2]), ("b", [unknown[3], *unknown[15:], 999])]

    with pytest.raises(UnknownItemsError) as caught:
        prepare_users(loaded_model, users)

    assert caught.value.unknown == [*unknown, 999]
    assert "26 item id(s)" in str(caught.value)


def test_prepare_users_drop_unknown_reports(loaded_model: LoadedModel) -> None:
    users = [("a", [1, "nope", 2, "nope"]), ("gone", ["nope", 777]), ("c", [3])]

    prepared = prepare_users(loaded_model, users, drop_unknown=True)

    assert prepared.user_ids == ["a", "c"]
    assert prepared.histories[0] == loaded_model.item_map.to_internal([1, 2])[0]
    assert prepared.dropped_items == 4
    assert prepared.unknown_items == ["nope", 777]
    assert prepared.skipped_users == ["gone"]


def test_prepare_users_all_unknown_empty(loaded_model: LoadedModel) -> None:
    with pytest.raises(EmptyInputError):
        prepare_users(loaded_model, [("a", ["x"]), ("b", ["y"])], drop_unknown=True)


def test_augment_users_raw_ids_out(loaded_model: LoadedModel) -> None:
    users = [("alice", [1, 2, 3, 4, 5, 6]), ("bob", [10, 11, 12, 13])]

    outcome = augment_users(loaded_model, users, GenerationConfig(m=2, p=1.0, tau=30, min_len=2))

    assert outcome.augmentations, "the trained model should keep some sequences for users who follow the cycle"
    for augmentation in outcome.augmentations:
        own = dict(users)[augmentation.user_id]
        assert set(augmentation.items) <= set(own)
        assert [step["item"] for step in augmentation.steps if step["item"] is not None] == augmentation.items[1:]


def test_augment_users_filters_copies_of_input(loaded_model: LoadedModel) -> None:
    # From [1, 7] with p = 1 the only sequence that can grow is [1, 7], a copy of the history.
    outcome = augment_users(loaded_model, [("a", [1, 7])], GenerationConfig(m=1, p=1.0, tau=30, min_len=2))

    assert outcome.augmentations == []
    assert outcome.stats.copies_of_existing == 1


def test_augment_users_unfiltered_returns_all(loaded_model: LoadedModel) -> None:
    outcome = augment_users(
        loaded_model, [("a", [1, 2, 3])], GenerationConfig(m=2, p=1.0, tau=30), filter_sequences=False
    )

    assert len(outcome.augmentations) == 1
    assert outcome.stats.duplicates == 1


def test_write_augmentations_jsonl(tmp_path: Path) -> None:
    augmentations = [
        Augmentation(user_id="u1", items=[5, "x"], stop_reason="max_len", steps=[{"step": 1, "item": "x"}]),
        Augmentation(user_id=7, items=[1, 2, 3], stop_reason="fidelity", steps=[]),
    ]

    count = write_augmentations_jsonl(augmentations, tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text().splitlines()

    assert count == 2
    assert json.loads(lines[0]) == augmentations[0].to_dict()
    assert json.loads(lines[1])["user_id"] == 7


def test_write_augmentations_inter_header_and_rows(tmp_path: Path) -> None:
    augmentations = [
        Augmentation(user_id="u1", items=[5, "x", 0], stop_reason="max_len", steps=[]),
        Augmentation(user_id="u1", items=[7, 8], stop_reason="fidelity", steps=[]),
        Augmentation(user_id=3, items=[9, 1], stop_reason="exhausted", steps=[]),
    ]
    path = tmp_path / "out.inter"

    count = write_augmentations_inter(augmentations, path)
    lines = path.read_text().splitlines()

    assert count == 3
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert lines[1:] == [
        "aug_u1_1\t5\t0",
        "aug_u1_1\tx\t1",
        "aug_u1_1\t0\t2",
        "aug_u1_2\t7\t0",
        "aug_u1_2\t8\t1",
        "aug_3_1\t9\t0",
        "aug_3_1\t1\t1",
    ]


def test_write_augmentations_inter_loads_back(tmp_path: Path) -> None:
    augmentations = [
        Augmentation(user_id="u1", items=[5, "x", 0], stop_reason="max_len", steps=[]),
        Augmentation(user_id=3, items=[9, 1], stop_reason="exhausted", steps=[]),
    ]
    path = tmp_path / "out.inter"
    write_augmentations_inter(augmentations, path)

    dataset = build_dataset(load_interactions(path))

    assert dataset.user_ids == ("aug_u1_1", "aug_3_1")
    assert [dataset.item_map.to_raw(seq) for seq in dataset.sequences] == [[5, "x", 0], [9, 1]]
