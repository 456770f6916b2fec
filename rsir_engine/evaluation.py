"""Full-ranking evaluation: Recall, NDCG and MRR at several cut-offs.

Every catalogue item is scored for every evaluated user; there are no sampled
negatives. Ties are broken pessimistically: the target ranks behind every
other item with the same score, so a model that scores all items alike ranks
each target last and scores close to zero.

With a single held-out item per user, Recall@K equals the hit rate HR@K.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from rsir_engine.sequences import pad_left

__all__ = ["DEFAULT_KS", "EvalResult", "evaluate", "metrics_from_ranks", "pessimistic_ranks"]

logger = logging.getLogger(__name__)

DEFAULT_KS = (5, 10, 20)


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation pass and the per-user ranks behind them."""

    metrics: dict[str, float]  # "recall@10" -> value
    ranks: np.ndarray  # (U,) int64, 1 = best
    users: np.ndarray  # (U,) indices of evaluated users
    exclude_history: bool
    ks: tuple[int, ...] = field(default=DEFAULT_KS)

    def summary(self, k: int = 10) -> str:
        """Format Recall, NDCG and MRR at ``k`` with the history setting on one line."""
        return (
            f"recall@{k}={self.metrics[f'recall@{k}']:.4f} ndcg@{k}={self.metrics[f'ndcg@{k}']:.4f} "
            f"mrr@{k}={self.metrics[f'mrr@{k}']:.4f} "
            f"(full ranking, {len(self.ranks)} users, history excluded: {'yes' if self.exclude_history else 'no'})"
        )


def pessimistic_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank each target among all scored items, counting ties against it.

    Args:
        scores: (B, N+1) scores; excluded items (padding, history) are ``-inf``.
        targets: (B,) target ids.

    Returns:
        (B,) ranks, 1 = best: 1 + number of other items scoring at least as high.
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    at_least = (scores >= target_scores).sum(dim=1)  # counts the target itself
    return at_least  # 1 + (others >= target)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Compute Recall@K, NDCG@K and MRR@K from 1-based ranks.

    Recall@K is the share of users whose target ranks within K; NDCG@K is
    ``1 / log2(rank + 1)`` within K, else 0; MRR@K is ``1 / rank`` within K, else 0.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    metrics: dict[str, float] = {}
    if len(ranks) == 0:
        return {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg", "mrr")}
    for k in ks:
        hit = ranks <= k
        metrics[f"recall@{k}"] = float(hit.mean())
        metrics[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
        metrics[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean())
    return metrics


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    histories: Sequence[Sequence[int]],
    targets: np.ndarray,
    *,
    users: np.ndarray | None = None,
    exclude_history: bool = False,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 512,
) -> EvalResult:
    """Rank each user's target after their history, over the whole catalogue.

    Args:
        model: a trained architecture; its device is used.
        histories: per-user item sequences that precede the target.
        targets: (U,) target item per user; users with target 0 are skipped.
        users: indices to evaluate; defaults to every user with a target.
        exclude_history: score the user's history items as ``-inf`` (except the
            target itself) so they cannot be recommended again.
        ks: cut-offs.
        batch_size: users per forward pass.

    Returns:
        The metrics and per-user ranks.
    """
    if users is None:
        users = np.flatnonzero(np.asarray(targets) > 0)
    device = next(model.parameters()).device
    max_len = model.config.max_len
    was_training = model.training
    model.eval()
    ranks = np.zeros(len(users), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        batch_users = users[start:start + batch_size]
        batch_histories = [histories[u] for u in batch_users]
        items = pad_left(batch_histories, max_len).to(device)
        scores = model.score_last(items).float()  # (B, N+1), padding already -inf
        batch_targets = torch.as_tensor(np.asarray(targets)[batch_users], dtype=torch.long, device=device)
        if exclude_history:
            for row, history in enumerate(batch_histories):
                seen = torch.as_tensor(sorted(set(history)), dtype=torch.long, device=device)
                target_score = scores[row, batch_targets[row]].clone()
                scores[row, seen] = float("-inf")
                scores[row, batch_targets[row]] = target_score
        ranks[start:start + len(batch_users)] = pessimistic_ranks(scores, batch_targets).cpu().numpy()
    if was_training:
        model.train()
    return EvalResult(
        metrics=metrics_from_ranks(ranks, ks), ranks=ranks, users=np.asarray(users), exclude_history=exclude_history, ks=tuple(ks)
    )
