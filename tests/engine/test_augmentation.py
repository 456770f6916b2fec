"""Tests for selecting generated sequences: length filter, duplicates, copies and counts."""

from __future__ import annotations

import pytest

from rsir_engine.augmentation import AugmentationStats, select_augmentations
from rsir_engine.fidelity import StepRecord, StopReason
from rsir_engine.generation import GeneratedSequence


def sequence(items: list[int], reason: StopReason = StopReason.MAX_LEN, failed_last: bool = False) -> GeneratedSequence:
    """Build a generated sequence whose checks all passed, plus one failed check when ``failed_last``."""
    steps = [StepRecord(step=t, best_rank=1, passed=True, item=items[t]) for t in range(1, len(items))]
    if failed_last:
        steps.append(StepRecord(step=len(items), best_rank=50, passed=False, item=None))
    return GeneratedSequence(seed_index=0, items=list(items), steps=steps, stop_reason=reason)


@pytest.fixture(scope="function")
def generated() -> list[GeneratedSequence]:
    """Return seven sequences: two short, one repeated twice, one copy of real data, two new."""
    return [
        sequence([1, 2], StopReason.FIDELITY, failed_last=True),  # short
        sequence([1, 2, 3], StopReason.EXHAUSTED),  # kept
        sequence([1, 2, 3], StopReason.EXHAUSTED),  # duplicate of the previous one
        sequence([4, 5, 6, 7], StopReason.FIDELITY, failed_last=True),  # copy of an existing sequence
        sequence([8], StopReason.FIDELITY, failed_last=True),  # short
        sequence([9, 10, 11, 12, 13], StopReason.MAX_LEN),  # kept
        sequence([1, 2, 3], StopReason.POOL_EMPTY),  # second duplicate
    ]


EXISTING = [[4, 5, 6, 7], [9, 10, 11]]


def test_select_augmentations_keeps_new_long_sequences(generated: list[GeneratedSequence]) -> None:
    kept, _ = select_augmentations(generated, min_len=3, existing=EXISTING)

    assert [seq.items for seq in kept] == [[1, 2, 3], [9, 10, 11, 12, 13]]


def test_select_augmentations_keeps_first_duplicate(generated: list[GeneratedSequence]) -> None:
    kept, _ = select_augmentations(generated, min_len=3, existing=EXISTING)

    assert kept[0] is generated[1]


def test_select_augmentations_counts(generated: list[GeneratedSequence]) -> None:
    _, stats = select_augmentations(generated, min_len=3, existing=EXISTING)

    assert stats.started == 7
    assert stats.kept == 2
    assert stats.dropped_short == 2
    assert stats.duplicates == 2
    assert stats.copies_of_existing == 1
    assert stats.mean_length == pytest.approx(4.0)
    assert stats.acceptance_rate == pytest.approx(2 / 7)


def test_select_augmentations_stop_reasons(generated: list[GeneratedSequence]) -> None:
    _, stats = select_augmentations(generated, min_len=3, existing=EXISTING)

    assert stats.stop_reasons == {"fidelity": 3, "exhausted": 2, "pool_empty": 1, "max_len": 1}


def test_select_augmentations_checks(generated: list[GeneratedSequence]) -> None:
    _, stats = select_augmentations(generated, min_len=3, existing=EXISTING)

    # Passed checks: 1 + 2 + 2 + 3 + 0 + 4 + 2; failed: one each for the three fidelity stops.
    assert stats.checks_passed == 14
    assert stats.checks == 17
    assert stats.step_pass_rate == pytest.approx(14 / 17)


@pytest.mark.parametrize(("min_len", "kept_lengths"), [(1, [2, 3, 1, 5]), (4, [5]), (6, [])])
def test_select_augmentations_min_len(
    generated: list[GeneratedSequence], min_len: int, kept_lengths: list[int]
) -> None:
    kept, _ = select_augmentations(generated, min_len=min_len, existing=EXISTING)

    assert [len(seq.items) for seq in kept] == kept_lengths


def test_select_augmentations_without_existing(generated: list[GeneratedSequence]) -> None:
    kept, stats = select_augmentations(generated, min_len=3)

    assert [seq.items for seq in kept] == [[1, 2, 3], [4, 5, 6, 7], [9, 10, 11, 12, 13]]
    assert stats.copies_of_existing == 0


def test_select_augmentations_prefix_of_existing_kept() -> None:
    # Only exact copies count: [9, 10, 11, 12] extends the existing [9, 10, 11].
    kept, stats = select_augmentations([sequence([9, 10, 11, 12])], min_len=3, existing=EXISTING)

    assert len(kept) == 1
    assert stats.copies_of_existing == 0


def test_select_augmentations_empty_input() -> None:
    kept, stats = select_augmentations([], min_len=3)

    assert kept == []
    assert stats.to_dict()["acceptance_rate"] == 0.0
    assert stats.mean_length == 0.0


def test_augmentation_stats_to_dict_has_rates() -> None:
    stats = AugmentationStats(started=4, kept=1, checks=10, checks_passed=5)

    data = stats.to_dict()

    assert data["acceptance_rate"] == 0.25
    assert data["step_pass_rate"] == 0.5
    assert set(data["stop_reasons"]) == {"fidelity", "exhausted", "pool_empty", "max_len"}
