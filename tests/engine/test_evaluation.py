"""Tests for full-ranking evaluation: pessimistic ties, metric formulas and history exclusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rsir_engine.architectures import SASRec
from rsir_engine.evaluation import evaluate, metrics_from_ranks, pessimistic_ranks

NUM_ITEMS = 30


def test_evaluate_equal_scores_rank_last(tiny_configs) -> None:
    torch.manual_seed(0)
    model = SASRec(tiny_configs.model(NUM_ITEMS)).eval()
    with torch.no_grad():
        model.item_embedding.weight.zero_()  # every item now scores 0 after any history
    histories = [[1, 2, 3], [4, 5], [6]]
    targets = np.array([4, 6, 7])

    result = evaluate(model, histories, targets)

    assert result.ranks.tolist() == [NUM_ITEMS] * 3
    assert result.metrics == {name: 0.0 for name in result.metrics}
    assert len(result.metrics) == 9


@pytest.mark.parametrize(
    ("row", "target", "expected"),
    [
        ([float("-inf"), 3.0, 2.0, 1.0], 1, 1),
        ([float("-inf"), 3.0, 2.0, 1.0], 3, 3),
        ([float("-inf"), 2.0, 2.0, 2.0], 1, 3),
        ([float("-inf"), 5.0, 2.0, 2.0], 3, 3),
        ([float("-inf"), 2.0, 2.0, 1.0], 3, 3),
    ],
)
def test_pessimistic_ranks_count_ties_against_target(row: list[float], target: int, expected: int) -> None:
    ranks = pessimistic_ranks(torch.tensor([row]), torch.tensor([target]))

    assert ranks.tolist() == [expected]


def ndcg(rank: int) -> float:
    return 1.0 / math.log2(rank + 1)


@pytest.mark.parametrize(
    ("ranks", "k", "recall", "ndcg_value", "mrr"),
    [
        ([1], 5, 1.0, 1.0, 1.0),
        ([2], 5, 1.0, ndcg(2), 0.5),
        ([5], 5, 1.0, ndcg(5), 0.2),
        ([6], 5, 0.0, 0.0, 0.0),
        ([1, 3, 11], 10, 2 / 3, (1.0 + ndcg(3)) / 3, (1.0 + 1 / 3) / 3),
        ([10, 20, 21, 100], 20, 0.5, (ndcg(10) + ndcg(20)) / 4, (0.1 + 0.05) / 4),
    ],
)
def test_metrics_from_ranks_formulas(ranks: list[int], k: int, recall: float, ndcg_value: float, mrr: float) -> None:
    metrics = metrics_from_ranks(np.array(ranks), ks=(k,))

    assert metrics[f"recall@{k}"] == pytest.approx(recall)
    assert metrics[f"ndcg@{k}"] == pytest.approx(ndcg_value)
    assert metrics[f"mrr@{k}"] == pytest.approx(mrr)


def test_metrics_from_ranks_default_cutoffs() -> None:
    metrics = metrics_from_ranks(np.array([7]))

    assert sorted(metrics) == sorted(f"{name}@{k}" for k in (5, 10, 20) for name in ("recall", "ndcg", "mrr"))
    assert metrics["recall@5"] == 0.0
    assert metrics["recall@10"] == 1.0


def test_metrics_from_ranks_no_users() -> None:
    metrics = metrics_from_ranks(np.array([], dtype=np.int64), ks=(10,))

    assert metrics == {"recall@10": 0.0, "ndcg@10": 0.0, "mrr@10": 0.0}


@pytest.fixture(scope="module")
def history_scorer(make_table_scorer):
    """Return a scorer where, after item 1, items 2, 3 and 4 beat item 5, and item 6 beats everything."""
    return make_table_scorer(8, {1: {6: 10.0, 2: 9.0, 3: 8.0, 4: 7.0, 5: 6.0, 7: 0.0, 8: -1.0}})


def test_evaluate_keeps_history_by_default(history_scorer) -> None:
    result = evaluate(history_scorer, [[2, 3, 1]], np.array([5]))

    assert result.ranks.tolist() == [5]
    assert result.exclude_history is False


def test_evaluate_exclude_history_removes_history(history_scorer) -> None:
    result = evaluate(history_scorer, [[2, 3, 1]], np.array([5]), exclude_history=True)

    # Items 2 and 3 leave the ranking; 6 and 4 still score higher than 5.
    assert result.ranks.tolist() == [3]
    assert result.exclude_history is True


def test_evaluate_exclude_history_keeps_target(history_scorer) -> None:
    # The target 3 is also in the history, as when a user consumes an item again.
    result = evaluate(history_scorer, [[3, 2, 1]], np.array([3]), exclude_history=True)

    assert result.ranks.tolist() == [2]


def test_evaluate_skips_users_without_target(history_scorer) -> None:
    result = evaluate(history_scorer, [[1], [1], [1]], np.array([5, 0, 6]))

    assert result.users.tolist() == [0, 2]
    assert result.ranks.tolist() == [5, 1]


def test_evaluate_batches_agree(history_scorer) -> None:
    histories = [[1]] * 5
    targets = np.array([2, 3, 4, 5, 6])

    one_batch = evaluate(history_scorer, histories, targets)
    small_batches = evaluate(history_scorer, histories, targets, batch_size=2)

    assert one_batch.ranks.tolist() == small_batches.ranks.tolist()


@pytest.mark.parametrize(("exclude", "text"), [(False, "history excluded: no"), (True, "history excluded: yes")])
def test_eval_result_summary_names_history_setting(history_scorer, exclude: bool, text: str) -> None:
    result = evaluate(history_scorer, [[2, 1]], np.array([5]), exclude_history=exclude)

    summary = result.summary()

    assert text in summary
    assert "recall@10=" in summary
    assert "full ranking" in summary
