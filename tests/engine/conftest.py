"""Shared fixtures of the engine tests: tiny datasets, tiny models and a fixed-table scorer.

Every model here trains on the CPU in a few seconds: max_len 8, hidden size
16, one layer, one head. The cyclic dataset has a pattern a model can learn
in a few epochs: each user walks the catalogue in order, item i -> i + 1,
wrapping after the last item.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn as nn

from rsir_engine.architectures import SASRec, SASRecConfig
from rsir_engine.data import SequenceDataset, build_dataset
from rsir_engine.model_io import LoadedModel
from rsir_engine.training import TrainConfig, fit

# Near 1.7e9 s, float32 values are 128 s apart, so events 50 s apart collapse in float32.
BASE_TIME = 1_700_000_000
CYCLE_ITEMS = 30
CYCLE_USERS = 60
CYCLE_LENGTH = 10


def cyclic_rows(
    num_users: int = CYCLE_USERS, num_items: int = CYCLE_ITEMS, length: int = CYCLE_LENGTH
) -> list[tuple[str, int, int]]:
    """Build ``(user, item, timestamp)`` rows where user u walks items u, u+1, ... (1-based, cyclic)."""
    rows = []
    for user in range(num_users):
        for step in range(length):
            item = (user + step) % num_items + 1
            rows.append((f"u{user}", item, BASE_TIME + 60 * step))
    return rows


def cyclic_frame(**sizes: int) -> pd.DataFrame:
    """Return the cyclic rows as an interaction frame with the engine's column names."""
    return pd.DataFrame(cyclic_rows(**sizes), columns=["user_id", "item_id", "timestamp"])


def tiny_sasrec_config(num_items: int) -> SASRecConfig:
    """Return a SASRec config that trains in seconds on a CPU."""
    return SASRecConfig(num_items=num_items, max_len=8, hidden_size=16, num_layers=1, num_heads=1, inner_size=32)


def tiny_train_config(**changes: object) -> TrainConfig:
    """Return a short training schedule; ``changes`` override single fields."""
    settings: dict[str, object] = {"max_epochs": 2, "patience": 1, "batch_size": 64, "learning_rate": 1e-2}
    settings.update(changes)
    return TrainConfig(**settings)


class TableScorer(nn.Module):
    """Scorer whose next-item scores are a fixed row chosen by the last item of the prefix.

    It follows the contract that generation and the fidelity check rely on:
    ``config.num_items`` and ``config.max_len``, ``score_last(items)`` on
    left-padded (B, L) ids returning (B, N+1) scores with column 0 at -inf, and
    one parameter so that ``next(model.parameters()).device`` works.

    Rows not listed score item i as ``-i``, so lower ids rank first.
    """

    def __init__(self, num_items: int, rows: Mapping[int, Mapping[int, float]], max_len: int = 8) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_items=num_items, max_len=max_len)
        self.anchor = nn.Parameter(torch.zeros(1))
        default = -torch.arange(num_items + 1, dtype=torch.float32)
        table = default.repeat(num_items + 1, 1)  # (N+1, N+1): row = last item, column = candidate
        for last, scores in rows.items():
            for item, score in scores.items():
                table[last, item] = score
        self.register_buffer("table", table)

    def score_last(self, items: torch.Tensor) -> torch.Tensor:
        scores = self.table[items[:, -1]].clone()  # (B, N+1)
        scores[:, 0] = float("-inf")
        return scores


@pytest.fixture(scope="session")
def cyclic_dataset() -> SequenceDataset:
    """Return 60 users who each walk 10 steps through a 30-item cycle."""
    return build_dataset(cyclic_frame(), name="cyclic")


@pytest.fixture(scope="session")
def trained_model(cyclic_dataset: SequenceDataset) -> SASRec:
    """Return a tiny SASRec trained for five epochs on the cyclic dataset (do not train it further)."""
    torch.manual_seed(0)
    split = cyclic_dataset.split()
    model = SASRec(tiny_sasrec_config(cyclic_dataset.num_items))
    fit(model, split.train, split, tiny_train_config(max_epochs=5, patience=5))
    return model.eval()


@pytest.fixture(scope="session")
def loaded_model(trained_model: SASRec, cyclic_dataset: SequenceDataset) -> LoadedModel:
    """Wrap the trained model with the dataset's item map, as a published model is served."""
    return LoadedModel(model=trained_model, item_map=cyclic_dataset.item_map, manifest={}, version=None)


@pytest.fixture(scope="session")
def make_table_scorer() -> Callable[..., TableScorer]:
    """Return the ``TableScorer`` class so tests can build their own tables."""
    return TableScorer


@pytest.fixture(scope="session")
def write_cyclic_csv(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Return a function that writes cyclic interactions to a new CSV file and returns its path."""

    def write(name: str = "tiny.csv", **sizes: int) -> Path:
        path = tmp_path_factory.mktemp("csv") / name
        cyclic_frame(**sizes).to_csv(path, index=False)
        return path

    return write


@pytest.fixture(scope="session")
def cyclic_rows_factory() -> Callable[..., list[tuple[str, int, int]]]:
    """Return the function that builds cyclic ``(user, item, timestamp)`` rows."""
    return cyclic_rows


@pytest.fixture(scope="session")
def tiny_configs() -> SimpleNamespace:
    """Return the builders of tiny model and training configs."""
    return SimpleNamespace(model=tiny_sasrec_config, train=tiny_train_config)

