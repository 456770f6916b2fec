"""Filter generated sequences, remove duplicates and merge survivors as pseudo-users."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from rsir_engine.fidelity import StopReason
from rsir_engine.generation import GeneratedSequence

__all__ = ["AugmentationStats", "select_augmentations"]


@dataclass
class AugmentationStats:
    """Counts of one augmentation pass, from sequences started to sequences kept."""

    started: int = 0
    kept: int = 0
    dropped_short: int = 0  # shorter than min_len
    duplicates: int = 0  # identical to an earlier new sequence
    copies_of_existing: int = 0  # identical to a sequence already in the data
    mean_length: float = 0.0  # items per kept sequence
    checks: int = 0  # fidelity checks run over all started sequences
    checks_passed: int = 0
    stop_reasons: dict[str, int] = field(default_factory=lambda: {reason.value: 0 for reason in StopReason})

    @property
    def acceptance_rate(self) -> float:
        """Share of started sequences that were kept."""
        return self.kept / self.started if self.started else 0.0

    @property
    def step_pass_rate(self) -> float:
        """Share of fidelity checks that passed."""
        return self.checks_passed / self.checks if self.checks else 0.0

    def to_dict(self) -> dict:
        """Return the counts and rates as a JSON-ready dict."""
        out = asdict(self)
        out["acceptance_rate"] = self.acceptance_rate
        out["step_pass_rate"] = self.step_pass_rate
        return out


def select_augmentations(
    generated: Sequence[GeneratedSequence],
    *,
    min_len: int,
    existing: Iterable[Sequence[int]] = (),
) -> tuple[list[GeneratedSequence], AugmentationStats]:
    """Keep generated sequences of at least ``min_len`` items that are new.

    A sequence is dropped when it is shorter than ``min_len``, when an earlier
    generated sequence has exactly the same items, or when it equals a
    sequence already in ``existing`` (real users or earlier pseudo-users).

    Returns:
        The kept sequences in input order and the counts behind them.
    """
    stats = AugmentationStats(started=len(generated))
    seen_existing = {tuple(seq) for seq in existing}
    seen_new: set[tuple[int, ...]] = set()
    kept: list[GeneratedSequence] = []
    reasons: Counter[str] = Counter()
    for sequence in generated:
        reasons[sequence.stop_reason.value] += 1
        stats.checks += len(sequence.steps)
        stats.checks_passed += sum(1 for step in sequence.steps if step.passed)
        key = tuple(sequence.items)
        if len(key) < min_len:
            stats.dropped_short += 1
            continue
        if key in seen_new:
            stats.duplicates += 1
            continue
        seen_new.add(key)
        if key in seen_existing:
            stats.copies_of_existing += 1
            continue
        kept.append(sequence)
    stats.kept = len(kept)
    stats.mean_length = sum(len(seq.items) for seq in kept) / len(kept) if kept else 0.0
    stats.stop_reasons.update(reasons)
    return kept, stats
