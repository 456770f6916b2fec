"""Tests for the fidelity check on a fixed-table scorer whose correct results are known.

The scorer's next-item scores depend only on the last item of the prefix.
The seed user's real items are S = {1, 2, 3}; every sequence starts with 1.

After item 1 the scores are 5: 9, 4: 8, 2: 7, 6: 7, 3: 6, so the best
remaining real item (2) has rank 3: items 5 and 4 score higher, and item 6
ties with it, which does not count against it.

After items 1, 2 the only remaining real item is 3, with score 5. Items 1
and 2 (both in the prefix) score 20 and 15 and item 4 scores 10, so item 3
has rank 4. It would have rank 2 if prefix items did not count.
"""

from __future__ import annotations

import pytest
import torch

from rsir_engine.errors import ConfigError, EmptyInputError
from rsir_engine.fidelity import StepRecord, StopReason, best_remaining_rank, check_sequences
from rsir_engine.generation import GenerationConfig, generate

NUM_ITEMS = 8
HISTORY = [1, 2, 3]
ROWS = {
    1: {5: 9.0, 4: 8.0, 2: 7.0, 6: 7.0, 3: 6.0, 7: 1.0, 8: 0.0, 1: -5.0},
    2: {1: 20.0, 2: 15.0, 4: 10.0, 3: 5.0, 5: 1.0, 6: 0.0, 7: -1.0, 8: -2.0},
}


@pytest.fixture(scope="module")
def scorer(make_table_scorer):
    """Return the fixed-table scorer described in the module docstring."""
    return make_table_scorer(NUM_ITEMS, ROWS)


def run_one(scorer, history: list[int], **settings: object):
    """Generate one sequence for ``history`` and return it."""
    config = GenerationConfig(m=1, min_len=1, **settings)
    (sequence,) = generate(scorer, [history], config)
    return sequence


def test_best_remaining_rank_counts_strictly_higher() -> None:
    scores = torch.tensor([[float("-inf"), 4.0, 3.0, 3.0, 1.0]])
    remaining = torch.tensor([[False, False, True, False, True]])

    assert best_remaining_rank(scores, remaining).tolist() == [2]


def test_best_remaining_rank_empty_remaining() -> None:
    scores = torch.tensor([[float("-inf"), 4.0, 3.0]])
    remaining = torch.zeros(1, 3, dtype=torch.bool)

    assert best_remaining_rank(scores, remaining).tolist() == [0]


def test_generate_fails_at_first_step(scorer) -> None:
    sequence = run_one(scorer, HISTORY, tau=2, p=1.0)

    assert sequence.items == [1]
    assert sequence.stop_reason is StopReason.FIDELITY
    assert sequence.steps == [StepRecord(step=1, best_rank=3, passed=False, item=None)]


def test_generate_tie_does_not_count_against_rank(scorer) -> None:
    sequence = run_one(scorer, HISTORY, tau=3, p=1.0)

    assert sequence.steps[0] == StepRecord(step=1, best_rank=3, passed=True, item=2)


def test_generate_prefix_items_count_in_rank(scorer) -> None:
    sequence = run_one(scorer, HISTORY, tau=3, p=1.0)

    assert sequence.items == [1, 2]
    assert sequence.stop_reason is StopReason.FIDELITY
    assert sequence.steps[1] == StepRecord(step=2, best_rank=4, passed=False, item=None)


def test_generate_continues_until_exhausted(scorer) -> None:
    sequence = run_one(scorer, HISTORY, tau=4, p=1.0)

    assert sequence.items == [1, 2, 3]
    assert sequence.stop_reason is StopReason.EXHAUSTED
    assert sequence.steps == [
        StepRecord(step=1, best_rank=3, passed=True, item=2),
        StepRecord(step=2, best_rank=4, passed=True, item=3),
        # The stopping check is recorded as in check_sequences: nothing remains, rank 0.
        StepRecord(step=3, best_rank=0, passed=False, item=None),
    ]


def test_generate_catalogue_pool_picks_best_item(scorer) -> None:
    # With p = 0 the pool is the whole catalogue: item 5 wins after item 1.
    sequence = run_one(scorer, HISTORY, tau=NUM_ITEMS, p=0.0, max_len=2)

    assert sequence.items == [1, 5]
    assert sequence.stop_reason is StopReason.MAX_LEN


def test_generate_large_tau_runs_to_max_len(scorer) -> None:
    # After 1 the best own item is 5; after 5 (default row, lower ids first) it is 2.
    sequence = run_one(scorer, [1, 2, 3, 4, 5], tau=NUM_ITEMS, p=1.0, max_len=3)

    assert sequence.items == [1, 5, 2]
    assert sequence.stop_reason is StopReason.MAX_LEN
    assert sequence.steps == [
        StepRecord(step=1, best_rank=1, passed=True, item=5),
        StepRecord(step=2, best_rank=2, passed=True, item=2),
    ]


def test_generate_pool_empty_without_fidelity(scorer) -> None:
    sequence = run_one(scorer, HISTORY, tau=1, p=1.0, fidelity=False)

    assert sequence.items == [1, 2, 3]
    assert sequence.stop_reason is StopReason.POOL_EMPTY
    assert sequence.steps == [
        StepRecord(step=1, best_rank=3, passed=False, item=2),
        StepRecord(step=2, best_rank=4, passed=False, item=3),
        StepRecord(step=3, best_rank=0, passed=False, item=None),
    ]


def test_check_sequences_cut_at_failed_step(scorer) -> None:
    (report,) = check_sequences(scorer, [HISTORY], [[1, 2, 3]], tau=3)

    assert report.kept_length == 2
    assert report.stop_reason is StopReason.FIDELITY
    assert report.steps == [
        StepRecord(step=1, best_rank=3, passed=True, item=2),
        StepRecord(step=2, best_rank=4, passed=False, item=3),
    ]


def test_check_sequences_all_pass(scorer) -> None:
    (report,) = check_sequences(scorer, [HISTORY], [[1, 2, 3]], tau=4)

    assert report.kept_length == 3
    assert report.stop_reason is None
    assert [step.passed for step in report.steps] == [True, True]


def test_check_sequences_fails_first_step(scorer) -> None:
    (report,) = check_sequences(scorer, [HISTORY], [[1, 5, 2]], tau=2)

    assert report.kept_length == 1
    assert report.stop_reason is StopReason.FIDELITY
    assert report.steps[0] == StepRecord(step=1, best_rank=3, passed=False, item=5)


def test_check_sequences_exhausted(scorer) -> None:
    (report,) = check_sequences(scorer, [HISTORY], [[1, 2, 3, 4]], tau=NUM_ITEMS)

    assert report.kept_length == 3
    assert report.stop_reason is StopReason.EXHAUSTED
    assert report.steps[-1] == StepRecord(step=3, best_rank=0, passed=False, item=4)


def test_check_sequences_single_item_no_steps(scorer) -> None:
    (report,) = check_sequences(scorer, [HISTORY], [[1]], tau=1)

    assert report.steps == []
    assert report.kept_length == 1
    assert report.stop_reason is None


def test_check_sequences_agrees_with_generation(scorer) -> None:
    generated = run_one(scorer, [1, 2, 3, 4, 5], tau=NUM_ITEMS, p=1.0, max_len=3)

    (report,) = check_sequences(scorer, [[1, 2, 3, 4, 5]], [generated.items], tau=NUM_ITEMS)

    assert report.steps == generated.steps
    assert report.kept_length == len(generated.items)


def test_check_sequences_several_candidates(scorer) -> None:
    reports = check_sequences(scorer, [HISTORY, HISTORY], [[1, 2, 3], [1, 5]], tau=3)

    assert [report.kept_length for report in reports] == [2, 2]
    assert [report.stop_reason for report in reports] == [StopReason.FIDELITY, None]


def test_check_sequences_rejects_tau_zero(scorer) -> None:
    with pytest.raises(ConfigError, match="tau"):
        check_sequences(scorer, [HISTORY], [[1, 2]], tau=0)


def test_check_sequences_rejects_length_mismatch(scorer) -> None:
    with pytest.raises(ConfigError):
        check_sequences(scorer, [HISTORY, HISTORY], [[1, 2]], tau=3)


def test_check_sequences_rejects_empty_candidate(scorer) -> None:
    with pytest.raises(EmptyInputError):
        check_sequences(scorer, [HISTORY], [[]], tau=3)


def test_step_record_to_dict() -> None:
    record = StepRecord(step=2, best_rank=4, passed=False, item=None)

    assert record.to_dict() == {"step": 2, "best_rank": 4, "passed": False, "item": None}
