"""Tests for training windows, fitting with early stopping, and stop requests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rsir_engine.architectures import SASRec
from rsir_engine.data import SequenceDataset
from rsir_engine.errors import ConfigError, EmptyInputError
from rsir_engine.sequences import pad_left, training_windows
from rsir_engine.training import TrainConfig, evaluate_test, evaluate_validation, fit


def counted_targets(sequence_length: int, max_len: int) -> tuple[list[int], list[int]]:
    """Return each counted target of ``1..sequence_length`` and the context it was predicted from."""
    inputs, targets, masks = training_windows([list(range(1, sequence_length + 1))], max_len)
    counted: list[int] = []
    contexts: list[int] = []
    for row, position in zip(*np.nonzero(masks)):
        counted.append(int(targets[row, position]))
        contexts.append(int(np.count_nonzero(inputs[row, : position + 1])))
    return counted, contexts


@pytest.mark.parametrize(
    ("sequence_length", "max_len"),
    [(2, 8), (8, 8), (9, 8), (10, 8), (20, 8), (21, 7), (50, 8), (7, 2)],
)
def test_training_windows_cover_every_target_once(sequence_length: int, max_len: int) -> None:
    counted, _ = counted_targets(sequence_length, max_len)

    assert sorted(counted) == list(range(2, sequence_length + 1))


@pytest.mark.parametrize(("sequence_length", "max_len"), [(20, 8), (21, 7), (50, 8)])
def test_training_windows_context_at_least_half(sequence_length: int, max_len: int) -> None:
    counted, contexts = counted_targets(sequence_length, max_len)

    for target, context in zip(counted, contexts):
        # Target t (1-based ids) has t - 1 earlier items in the sequence.
        assert context >= min(target - 1, max_len // 2), f"target {target} saw {context} items"


def test_training_windows_inputs_precede_targets() -> None:
    inputs, targets, masks = training_windows([list(range(1, 21))], 8)

    shifted = inputs[:, 1:]
    assert np.array_equal(shifted[shifted > 0], targets[:, :-1][shifted > 0])
    assert np.all(targets[masks] == inputs[masks] + 1)


def test_training_windows_skip_single_items() -> None:
    inputs, _, masks = training_windows([[5], [1, 2, 3]], 8)

    assert inputs.shape == (1, 8)
    assert int(masks.sum()) == 2


def test_training_windows_empty_input() -> None:
    inputs, targets, masks = training_windows([[4]], 8)

    assert inputs.shape == (0, 8)
    assert targets.shape == (0, 8)
    assert masks.shape == (0, 8)


def test_pad_left_keeps_most_recent() -> None:
    padded = pad_left([[1, 2, 3, 4, 5], [7]], 3)

    assert padded.tolist() == [[3, 4, 5], [0, 0, 7]]


def test_fit_learns_cyclic_pattern(trained_model: SASRec, cyclic_dataset: SequenceDataset, tiny_configs) -> None:
    split = cyclic_dataset.split()
    torch.manual_seed(0)
    untrained = SASRec(tiny_configs.model(cyclic_dataset.num_items))

    trained_ndcg = evaluate_validation(trained_model, split).metrics["ndcg@10"]
    untrained_ndcg = evaluate_validation(untrained, split).metrics["ndcg@10"]

    # A uniformly random ranking of 30 items has an expected NDCG@10 of about 0.15.
    assert untrained_ndcg < 0.25
    assert trained_ndcg > 0.4
    assert trained_ndcg > untrained_ndcg + 0.25


def test_evaluate_test_learns_cyclic_pattern(trained_model: SASRec, cyclic_dataset: SequenceDataset) -> None:
    tested = evaluate_test(trained_model, cyclic_dataset.split())

    assert tested.metrics["ndcg@10"] > 0.4


def test_fit_early_stopping_before_max_epochs(cyclic_dataset: SequenceDataset, tiny_configs) -> None:
    split = cyclic_dataset.split()
    torch.manual_seed(0)
    model = SASRec(tiny_configs.model(cyclic_dataset.num_items))
    # Steps of 1e-12 are below float32 resolution for these weights, so
    # validation never improves after the first epoch.
    config = tiny_configs.train(max_epochs=10, patience=2, learning_rate=1e-12)

    result = fit(model, split.train, split, config)

    assert result.epochs_run == 3
    assert result.best_epoch == 1
    assert len(result.history) == 3


def test_fit_should_stop_ends_training(cyclic_dataset: SequenceDataset, tiny_configs) -> None:
    split = cyclic_dataset.split()
    torch.manual_seed(0)
    model = SASRec(tiny_configs.model(cyclic_dataset.num_items))
    calls: list[int] = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) >= 2

    result = fit(model, split.train, split, tiny_configs.train(max_epochs=10, patience=10), should_stop=stop_after_two)

    assert result.epochs_run == 2
    assert len(calls) == 2


def test_fit_leaves_best_epoch_weights(cyclic_dataset: SequenceDataset, tiny_configs) -> None:
    split = cyclic_dataset.split()
    torch.manual_seed(0)
    model = SASRec(tiny_configs.model(cyclic_dataset.num_items))

    result = fit(model, split.train, split, tiny_configs.train(max_epochs=3, patience=3))

    assert result.best_valid == evaluate_validation(model, split).metrics
    assert not model.training


def test_fit_history_rows(cyclic_dataset: SequenceDataset, tiny_configs) -> None:
    split = cyclic_dataset.split()
    torch.manual_seed(0)
    model = SASRec(tiny_configs.model(cyclic_dataset.num_items))

    result = fit(model, split.train, split, tiny_configs.train(max_epochs=2, patience=2))

    assert [row["epoch"] for row in result.history] == [1.0, 2.0]
    assert all(math.isfinite(row["loss"]) for row in result.history)
    assert all("valid_ndcg@10" in row for row in result.history)


def test_fit_sampled_softmax_runs(cyclic_dataset: SequenceDataset, tiny_configs) -> None:
    split = cyclic_dataset.split()
    torch.manual_seed(0)
    model = SASRec(tiny_configs.model(cyclic_dataset.num_items))

    result = fit(model, split.train, split, tiny_configs.train(max_epochs=3, patience=3, num_negatives=8))

    assert all(math.isfinite(row["loss"]) for row in result.history)
    assert torch.count_nonzero(model.item_embedding.weight[0]).item() == 0


def test_fit_nothing_to_learn(cyclic_dataset: SequenceDataset, tiny_configs) -> None:
    split = cyclic_dataset.split()
    model = SASRec(tiny_configs.model(cyclic_dataset.num_items))

    with pytest.raises(EmptyInputError):
        fit(model, [[1], [2]], split, tiny_configs.train())


@pytest.mark.parametrize(
    "changes",
    [
        {"max_epochs": 0},
        {"batch_size": 0},
        {"learning_rate": 0.0},
        {"patience": 0},
        {"num_negatives": 0},
    ],
)
def test_train_config_rejects_bad_values(changes: dict) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(**changes)
