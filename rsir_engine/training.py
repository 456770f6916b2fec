"""Fit a sequential recommender with early stopping on validation NDCG@10.

Each training sequence is read in one forward pass with a loss at every
position (the SASRec paper's objective). Sequences longer than the model's
``max_len`` are cut into overlapping windows so that every next-item target
is trained exactly once per epoch; see ``sequences.training_windows``.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from rsir_engine.data import LeaveOneOutSplit
from rsir_engine.errors import ConfigError, EmptyInputError
from rsir_engine.evaluation import EvalResult, evaluate
from rsir_engine.sequences import training_windows

__all__ = ["TrainConfig", "TrainResult", "fit", "evaluate_test", "evaluate_validation", "seed_everything"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and stopping rule of one training run."""

    max_epochs: int = 200
    batch_size: int = 128  # training windows per step
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping
    eval_every: int = 1  # epochs between validation passes
    num_negatives: int | None = None  # sampled softmax with this many shared negatives; None = full softmax
    exclude_history: bool = False  # evaluation setting, printed in every report
    seed: int = 0
    progress: bool = False  # show a progress bar per epoch

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ConfigError(f"max_epochs must be at least 1, got {self.max_epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.patience < 1:
            raise ConfigError(f"patience must be at least 1 epoch, got {self.patience}")
        if self.num_negatives is not None and self.num_negatives < 1:
            raise ConfigError(f"num_negatives must be at least 1 or None, got {self.num_negatives}")

    def to_dict(self) -> dict:
        """Return the config as a JSON-ready dict."""
        return asdict(self)


@dataclass
class TrainResult:
    """Outcome of ``fit``: the best epoch, its validation metrics and the timings."""

    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _sampled_softmax_loss(
    model: nn.Module, items: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, num_negatives: int, generator: torch.Generator
) -> torch.Tensor:
    """Cross-entropy over each target and ``num_negatives`` uniform negatives shared by the batch."""
    states = model.hidden_states(items)[mask]  # (M, D)
    positives = targets[mask]  # (M,)
    weight = model.item_embedding.weight  # (N+1, D)
    negatives = torch.randint(1, weight.shape[0], (num_negatives,), generator=generator).to(items.device)
    pos_logits = (states * weight[positives]).sum(-1, keepdim=True)  # (M, 1)
    neg_logits = states @ weight[negatives].T  # (M, S)
    # A sampled negative equal to the target would be scored against itself.
    neg_logits = neg_logits.masked_fill(negatives.unsqueeze(0) == positives.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos_logits, neg_logits], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(positives), dtype=torch.long, device=items.device))


def fit(
    model: nn.Module,
    train_sequences: Sequence[Sequence[int]],
    split: LeaveOneOutSplit,
    config: TrainConfig,
    *,
    log_prefix: str = "",
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``model`` in place and leave it at its best validation epoch.

    Args:
        model: an untrained (or warm-started) architecture on its target device.
        train_sequences: every training sequence: real users' training parts
            and any pseudo-users. Validation and test items must not be in it.
        split: real users' split; validation uses ``split.train`` as history
            and ``split.valid_targets`` as targets.
        config: optimiser and stopping settings.
        log_prefix: text put in front of every log line (run and round ids).
        should_stop: polled between epochs; when it returns true, training ends
            early and keeps the best epoch so far.

    Returns:
        The best epoch and its validation metrics.

    Raises:
        EmptyInputError: no sequence has two or more items.
    """
    inputs, targets, masks = training_windows(train_sequences, model.config.max_len)
    if len(inputs) == 0:
        raise EmptyInputError("no training sequence has two or more items, so there is nothing to learn")
    device = next(model.parameters()).device
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)

    inputs_t = torch.from_numpy(inputs)
    targets_t = torch.from_numpy(targets)
    masks_t = torch.from_numpy(masks)
    num_batches = math.ceil(len(inputs) / config.batch_size)
    logger.info(
        "%straining %s on %d sequences (%d windows, %d targets), %d batches per epoch, device %s",
        log_prefix,
        type(model).__name__,
        len(train_sequences),
        len(inputs),
        int(masks.sum()),
        num_batches,
        device,
    )

    best_score = -1.0
    best_epoch = 0
    best_valid: dict[str, float] = {}
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    epochs_without_gain = 0
    started = time.perf_counter()
    epoch = 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        epoch_started = time.perf_counter()
        order = torch.randperm(len(inputs), generator=generator)
        total_loss = 0.0
        batches = range(num_batches)
        if config.progress:
            batches = tqdm(batches, desc=f"{log_prefix}epoch {epoch}", leave=False, unit="batch")
        for batch in batches:
            index = order[batch * config.batch_size:(batch + 1) * config.batch_size]
            items = inputs_t[index].to(device, non_blocking=True)
            batch_targets = targets_t[index].to(device, non_blocking=True)
            batch_mask = masks_t[index].to(device, non_blocking=True)
            if config.num_negatives is None:
                _, loss = model(items, batch_targets, batch_mask)
            else:
                loss = _sampled_softmax_loss(model, items, batch_targets, batch_mask, config.num_negatives, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach())
        train_seconds = time.perf_counter() - epoch_started

        row = {"epoch": float(epoch), "loss": total_loss / num_batches, "train_seconds": train_seconds}
        if epoch % config.eval_every == 0 or epoch == config.max_epochs:
            valid_started = time.perf_counter()
            valid = evaluate_validation(model, split, exclude_history=config.exclude_history)
            row["valid_seconds"] = time.perf_counter() - valid_started
            row.update({f"valid_{name}": value for name, value in valid.metrics.items()})
            score = valid.metrics["ndcg@10"]
            improved = score > best_score
            if improved:
                best_score, best_epoch, best_valid = score, epoch, dict(valid.metrics)
                best_state = copy.deepcopy(model.state_dict())
                epochs_without_gain = 0
            else:
                epochs_without_gain += config.eval_every
            logger.info(
                "%sepoch %d: loss %.4f, valid ndcg@10 %.4f recall@10 %.4f%s, %.1f s",
                log_prefix,
                epoch,
                row["loss"],
                score,
                valid.metrics["recall@10"],
                " (best)" if improved else "",
                train_seconds,
            )
        history.append(row)
        if epochs_without_gain >= config.patience:
            logger.info("%sstopping early: no gain for %d epochs, best epoch %d", log_prefix, epochs_without_gain, best_epoch)
            break
        if should_stop is not None and should_stop():
            logger.info("%sstop requested after epoch %d, keeping best epoch %d", log_prefix, epoch, best_epoch)
            break

    model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - started
    return TrainResult(best_epoch=best_epoch, best_valid=best_valid, epochs_run=epoch, seconds=seconds, history=history)


def evaluate_validation(model: nn.Module, split: LeaveOneOutSplit, *, exclude_history: bool = False) -> EvalResult:
    """Evaluate on real users' validation items, with their training items as history."""
    return evaluate(model, split.train, split.valid_targets, users=split.eval_users, exclude_history=exclude_history)


def evaluate_test(model: nn.Module, split: LeaveOneOutSplit, *, exclude_history: bool = False) -> EvalResult:
    """Evaluate on real users' test items, with training plus validation items as history."""
    return evaluate(model, split.test_histories(), split.test_targets, users=split.eval_users, exclude_history=exclude_history)
