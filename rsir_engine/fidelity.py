"""The fidelity check: do the user's unused real items still rank high?

At every generation step the model scores the whole catalogue after the
synthetic prefix. Let R be the seed user's real training items that are not
yet in the prefix. The step passes when the best-ranked item of R has rank at
most ``tau``, where the rank of an item is 1 + the number of catalogue items
scoring strictly higher (items already in the prefix still count). Because a
higher score means a better rank, the best rank of R is 1 + the number of
items scoring strictly above R's highest score.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from rsir_engine.errors import ConfigError, EmptyInputError
from rsir_engine.sequences import pad_left

__all__ = ["FidelityReport", "StepRecord", "StopReason", "best_remaining", "best_remaining_rank", "check_sequences"]


class StopReason(str, enum.Enum):
    """Reason a synthetic sequence stopped growing."""

    FIDELITY = "fidelity"  # no remaining real item ranked within tau
    EXHAUSTED = "exhausted"  # every real item of the user is already in the prefix
    POOL_EMPTY = "pool_empty"  # the chosen candidate pool had nothing left to add
    MAX_LEN = "max_len"  # the sequence reached its maximum length


@dataclass(frozen=True)
class StepRecord:
    """One fidelity check: the prefix length it was made at, its result and the item appended."""

    step: int  # number of items in the prefix when the check ran (1 = after the first item)
    best_rank: int  # best rank among the user's unused real items, 1 = top; 0 when none remain
    passed: bool  # best_rank <= tau
    item: int | None  # internal id appended after the check, None when nothing was appended

    def to_dict(self) -> dict:
        """Return the record as a JSON-ready dict."""
        return asdict(self)


def best_remaining(
    scores: torch.Tensor, remaining: torch.Tensor, has_remaining: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find the best remaining real item of each row and its rank.

    Args:
        scores: (B, N+1) scores; padding is ``-inf``.
        remaining: (B, N+1) bool, the user's real items not yet in the prefix.
        has_remaining: (B,) bool, whether a row has any remaining item, when
            the caller tracks it; computed from ``remaining`` otherwise.

    Returns:
        ``(ranks, items)``: (B,) int64 ranks (1 = top, 0 for rows without
        remaining items) and (B,) the best remaining item per row, which is
        meaningless for rows without remaining items.
    """
    best_score, best_item = scores.masked_fill(~remaining, float("-inf")).max(dim=1)
    # Summing the bool mask as int32 skips a (rows x catalogue) int64 copy.
    ranks = 1 + (scores > best_score.unsqueeze(1)).sum(dim=1, dtype=torch.int32).long()
    if has_remaining is None:
        has_remaining = remaining.any(dim=1)
    return torch.where(has_remaining, ranks, torch.zeros_like(ranks)), best_item


def best_remaining_rank(
    scores: torch.Tensor, remaining: torch.Tensor, has_remaining: torch.Tensor | None = None
) -> torch.Tensor:
    """Compute the best rank among the remaining real items of each row (1 = top, 0 = none remain)."""
    return best_remaining(scores, remaining, has_remaining)[0]


@dataclass(frozen=True)
class FidelityReport:
    """The fidelity check of one supplied candidate sequence against a user's history."""

    steps: list[StepRecord]
    kept_length: int  # items kept when the sequence is cut at its first failed check
    stop_reason: StopReason | None  # None when every check passed and nothing was cut


@torch.inference_mode()
def check_sequences(
    model: nn.Module, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]], *, tau: int
) -> list[FidelityReport]:
    """Run the fidelity check over caller-supplied candidate sequences.

    Candidate ``c`` is judged against ``histories[i]`` as generation would judge
    it: before appending ``c[t]`` the model scores the prefix ``c[:t]`` and the
    best rank of the history items not in the prefix must be at most ``tau``.

    Args:
        model: a trained architecture.
        histories: per candidate, the user's real items (internal ids).
        candidates: candidate sequences (internal ids), each at least one item.
        tau: rank threshold, 1 = only the top item passes.

    Returns:
        One report per candidate with every step's record and where it would be cut.

    Raises:
        ConfigError: ``tau`` is below 1 or the lists differ in length.
        EmptyInputError: a candidate is empty.
    """
    if tau < 1:
        raise ConfigError(f"tau must be at least 1, got {tau}")
    if len(histories) != len(candidates):
        raise ConfigError(f"got {len(histories)} histories for {len(candidates)} candidates; pass one per candidate")
    if any(len(candidate) == 0 for candidate in candidates):
        raise EmptyInputError("a candidate sequence is empty; each needs at least its first item")

    device = next(model.parameters()).device
    num_items = model.config.num_items
    max_len = model.config.max_len
    prefixes: list[list[int]] = []
    owners: list[tuple[int, int]] = []  # (candidate, prefix length)
    for index, candidate in enumerate(candidates):
        for length in range(1, len(candidate)):
            prefixes.append(list(candidate[:length]))
            owners.append((index, length))

    reports_steps: list[list[StepRecord]] = [[] for _ in candidates]
    ranks_out: list[int] = []
    batch = 1024
    for start in range(0, len(prefixes), batch):
        chunk = prefixes[start:start + batch]
        scores = model.score_last(pad_left(chunk, max_len).to(device)).float()  # (B, N+1)
        remaining = torch.zeros(len(chunk), num_items + 1, dtype=torch.bool, device=device)
        for row, (index, _) in enumerate(owners[start:start + batch]):
            remaining[row, list(histories[index])] = True
            remaining[row, chunk[row]] = False
        remaining[:, 0] = False
        ranks_out.extend(best_remaining_rank(scores, remaining).tolist())

    for (index, length), rank in zip(owners, ranks_out):
        reports_steps[index].append(
            StepRecord(step=length, best_rank=int(rank), passed=0 < rank <= tau, item=int(candidates[index][length]))
        )

    reports: list[FidelityReport] = []
    for index, candidate in enumerate(candidates):
        steps = reports_steps[index]
        kept, reason = len(candidate), None
        for record in steps:
            if record.best_rank == 0:
                kept, reason = record.step, StopReason.EXHAUSTED
                break
            if not record.passed:
                kept, reason = record.step, StopReason.FIDELITY
                break
        reports.append(FidelityReport(steps=steps, kept_length=kept, stop_reason=reason))
    return reports
