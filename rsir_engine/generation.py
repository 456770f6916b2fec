"""Fidelity-controlled generation of synthetic user sequences, batched.

For each seed user, ``m`` sequences start with the user's earliest training
item and grow one item at a time:

1. the model scores the catalogue after the prefix;
2. the fidelity check: the user's real items not yet in the prefix (R) must
   have a best rank of at most ``tau``. When R is empty the sequence stops as
   ``exhausted``. When the check fails it stops as ``fidelity``, and the failed
   step adds nothing;
3. with probability ``p`` the candidate pool is the user's own items,
   otherwise the whole catalogue, minus padding and items already in the prefix;
   an empty pool stops the sequence as ``pool_empty``;
4. the highest-scoring pool item is appended (greedy), or one is sampled with
   a temperature and optional top-k;
5. a sequence that reaches ``max_len`` stops as ``max_len``.

All sequences in a batch have the same length at every step (they all start
with one item and grow by one), so the prefix tensor needs no padding. Random
draws (the coin for ``p`` and the sampling noise) are taken from the seed up
front, one row per sequence, so output does not depend on the batch size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from rsir_engine.errors import ConfigError, EmptyInputError
from rsir_engine.fidelity import StepRecord, StopReason, best_remaining

__all__ = ["GeneratedSequence", "GenerationConfig", "draw_randomness", "generate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig:
    """Parameters of fidelity-controlled generation."""

    m: int = 5  # sequences started per seed user
    tau: int = 20  # rank threshold of the fidelity check, 1 = top item only
    p: float = 0.5  # probability that a step picks from the user's own items
    max_len: int | None = None  # maximum synthetic sequence length in items; None = the model's max_len
    min_len: int = 3  # shortest sequence kept, in items
    temperature: float | None = None  # sample with this softmax temperature; None = greedy
    top_k: int | None = None  # sample among the k best pool items; None = all (greedy when both are None)
    fidelity: bool = True  # False: only max_len or an empty pool stops a sequence; ranks are still recorded
    seed: int = 0
    batch_size: int = 2048  # sequences per forward pass

    def __post_init__(self) -> None:
        if self.m < 1:
            raise ConfigError(f"m must be at least 1, got {self.m}")
        if self.tau < 1:
            raise ConfigError(f"tau must be at least 1, got {self.tau}")
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"p must be between 0 and 1, got {self.p}")
        if self.max_len is not None and self.max_len < 2:
            raise ConfigError(f"max_len must be at least 2, got {self.max_len}")
        if self.min_len < 1:
            raise ConfigError(f"min_len must be at least 1, got {self.min_len}")
        if self.max_len is not None and self.min_len > self.max_len:
            raise ConfigError(f"min_len {self.min_len} exceeds max_len {self.max_len}")
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {self.top_k}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")

    @property
    def sampling(self) -> bool:
        """Whether steps sample instead of taking the best pool item."""
        return self.temperature is not None or self.top_k is not None

    def to_dict(self) -> dict:
        """Return the config as a JSON-ready dict."""
        return asdict(self)


@dataclass
class GeneratedSequence:
    """One synthetic sequence with its fidelity record."""

    seed_index: int  # position of the seed user in the list passed to ``generate``
    items: list[int]  # internal ids, first item is the seed user's earliest item
    steps: list[StepRecord] = field(default_factory=list)
    stop_reason: StopReason = StopReason.MAX_LEN


def draw_randomness(num_sequences: int, max_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the coin for ``p`` and a uniform for sampling, per sequence and step.

    Returns:
        ``(coins, uniforms)``, each (S, max_len) float32 in [0, 1) on the CPU.
    """
    generator = torch.Generator().manual_seed(seed)
    coins = torch.rand(num_sequences, max_len, generator=generator)
    uniforms = torch.rand(num_sequences, max_len, generator=generator)
    return coins, uniforms


def _choose(
    scores: torch.Tensor, pool: torch.Tensor, uniforms: torch.Tensor, config: GenerationConfig
) -> torch.Tensor:
    """Pick one pool item per row: the best one, or a sample by inverse CDF."""
    masked = scores.masked_fill(~pool, float("-inf"))  # (B, N+1)
    if not config.sampling:
        return masked.argmax(dim=1)
    if config.top_k is not None:
        k = min(config.top_k, masked.shape[1])
        kth = masked.topk(k, dim=1).values[:, -1:]  # (B, 1)
        masked = masked.masked_fill(masked < kth, float("-inf"))
    probs = torch.softmax(masked / (config.temperature or 1.0), dim=1)  # (B, N+1)
    cdf = probs.cumsum(dim=1)
    threshold = uniforms.unsqueeze(1) * cdf[:, -1:]  # (B, 1)
    choice = torch.searchsorted(cdf, threshold).squeeze(1)
    choice = choice.clamp(max=masked.shape[1] - 1)
    # Rounding can land on a zero-probability column; fall back to the best item there.
    bad = ~pool.gather(1, choice.unsqueeze(1)).squeeze(1)
    return torch.where(bad, masked.argmax(dim=1), choice)


@torch.inference_mode()
def generate(
    model: nn.Module,
    seed_histories: Sequence[Sequence[int]],
    config: GenerationConfig,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> list[GeneratedSequence]:
    """Generate ``config.m`` synthetic sequences for every seed user.

    Args:
        model: a trained architecture; its device is used.
        seed_histories: per seed user, real training items in time order
            (internal ids). Validation and test items must not be included.
        config: generation parameters.
        should_stop: polled between batches; when it returns true, generation
            ends and returns what was finished.

    Returns:
        The sequences in seed order, ``m`` per seed user, before any filtering.

    Raises:
        EmptyInputError: no seed user or an empty seed history.
    """
    if len(seed_histories) == 0:
        raise EmptyInputError("no seed users to generate from")
    empty = [index for index, history in enumerate(seed_histories) if len(history) == 0]
    if empty:
        raise EmptyInputError(f"{len(empty)} seed user(s) have no items, first at position {empty[0]}")
    max_len = min(config.max_len or model.config.max_len, model.config.max_len)
    num_sequences = len(seed_histories) * config.m
    coins, uniforms = draw_randomness(num_sequences, max_len, config.seed)

    was_training = model.training
    model.eval()
    results: list[GeneratedSequence] = []
    for start in range(0, num_sequences, config.batch_size):
        stop = min(start + config.batch_size, num_sequences)
        seed_index = [index // config.m for index in range(start, stop)]
        results.extend(
            _generate_batch(model, [seed_histories[i] for i in seed_index], seed_index, coins[start:stop], uniforms[start:stop], max_len, config)
        )
        if should_stop is not None and should_stop():
            logger.info("generation stopped on request after %d of %d sequences", len(results), num_sequences)
            break
    if was_training:
        model.train()
    return results


def _generate_batch(
    model: nn.Module,
    histories: list[Sequence[int]],
    seed_index: list[int],
    coins: torch.Tensor,
    uniforms: torch.Tensor,
    max_len: int,
    config: GenerationConfig,
) -> list[GeneratedSequence]:
    """Grow one batch of sequences step by step until every one has stopped."""
    device = next(model.parameters()).device
    B = len(histories)
    N1 = model.config.num_items + 1

    # 1. Per-sequence masks over the catalogue, kept only for live rows.
    # ``remaining`` is the user's items not in the prefix: R, and also the pool
    # when the coin picks the user's own items. ``available`` is every item not
    # in the prefix, the catalogue pool.
    remaining = torch.zeros(B, N1, dtype=torch.bool, device=device)
    rows = torch.repeat_interleave(torch.arange(B), torch.tensor([len(h) for h in histories]))
    cols = torch.tensor([item for history in histories for item in history], dtype=torch.long)
    remaining[rows.to(device), cols.to(device)] = True
    remaining[:, 0] = False
    # Greedy choice needs no catalogue mask: the best unused item of the user is
    # the one the fidelity check finds, and the best catalogue item is found by
    # hiding the prefix in the scores. Sampling draws from a pool mask instead.
    available = torch.ones(B, N1, dtype=torch.bool, device=device) if config.sampling else None
    if available is not None:
        available[:, 0] = False

    sequences = torch.zeros(B, max_len, dtype=torch.long, device=device)
    sequences[:, 0] = torch.tensor([history[0] for history in histories], device=device)
    every_row = torch.arange(B, device=device)
    remaining[every_row, sequences[:, 0]] = False
    if available is not None:
        available[every_row, sequences[:, 0]] = False
    remaining_count = remaining.sum(dim=1)  # (B,), |R|, kept up to date instead of scanning the masks
    best_ranks = torch.zeros(B, max_len, dtype=torch.long, device=device)  # rank checked before step t
    passed = torch.zeros(B, max_len, dtype=torch.bool, device=device)
    lengths = torch.ones(B, dtype=torch.long, device=device)
    stop_codes = torch.full((B,), -1, dtype=torch.long, device=device)
    codes = list(StopReason)
    own_items = (coins < config.p).to(device)  # (B, max_len), the coin of every step
    uniforms = uniforms.to(device)

    # 2. Grow all live sequences together; each step appends one item or stops.
    # Models with ``decode_step`` keep per-layer keys and values, so a step
    # encodes one position instead of the whole prefix. Live rows are packed
    # after every step, so the masks never carry stopped sequences.
    incremental = hasattr(model, "decode_step")
    cache = None
    active = every_row  # original row of each live row
    for length in range(1, max_len):
        if active.numel() == 0:
            break
        if incremental:
            scores, cache = model.decode_step(sequences[active, length - 1], length - 1, cache)
            scores = scores.float()  # (A, N+1)
        else:
            scores = model.score_last(sequences[active, :length]).float()  # (A, N+1)
        # The best remaining item is also the greedy choice from the user's own items.
        ranks, best_own = best_remaining(scores, remaining, remaining_count > 0)  # (A,) each, rank 0: none remain
        best_ranks[active, length] = ranks
        exhausted = ranks == 0
        check = ~exhausted & (ranks <= config.tau)
        passed[active, length] = check
        if config.fidelity:
            ok = check
            stop_codes[active[exhausted]] = codes.index(StopReason.EXHAUSTED)
            stop_codes[active[~exhausted & ~check]] = codes.index(StopReason.FIDELITY)
        else:
            ok = torch.ones_like(check)

        own = own_items[active, length]  # (A,)
        # The catalogue pool contains N - length items, so only the own-items pool can be empty.
        pool_size = torch.where(own, remaining_count, torch.full_like(remaining_count, N1 - 1 - length))
        pool_empty = ok & (pool_size == 0)
        stop_codes[active[pool_empty]] = codes.index(StopReason.POOL_EMPTY)

        grow = ok & ~pool_empty
        if available is None:
            # Hide the prefix (scores are not used after this), then take the best item.
            best_any = scores.scatter_(1, sequences[active, :length], float("-inf")).argmax(dim=1)
            chosen = torch.where(own, best_own, best_any)[grow]
        else:
            pool = torch.where(own.unsqueeze(1), remaining, available)  # (A, N+1)
            chosen = _choose(scores[grow], pool[grow], uniforms[active[grow], length], config)
        active = active[grow]
        sequences[active, length] = chosen
        lengths[active] = length + 1
        remaining = remaining[grow]
        live = torch.arange(active.numel(), device=device)
        remaining_count = remaining_count[grow] - remaining[live, chosen].long()
        remaining[live, chosen] = False
        if available is not None:
            available = available[grow]
            available[live, chosen] = False
        if cache is not None:
            cache = [(keys[grow], values[grow]) for keys, values in cache]
    stop_codes[active] = codes.index(StopReason.MAX_LEN)

    # 3. Move to Python objects once per batch.
    sequences_cpu = sequences.cpu().tolist()
    ranks_cpu = best_ranks.cpu().tolist()
    passed_cpu = passed.cpu().tolist()
    lengths_cpu = lengths.cpu().tolist()
    stops_cpu = stop_codes.cpu().tolist()
    out: list[GeneratedSequence] = []
    for row in range(B):
        length = lengths_cpu[row]
        reason = codes[stops_cpu[row]]
        steps = [
            StepRecord(step=t, best_rank=ranks_cpu[row][t], passed=passed_cpu[row][t], item=sequences_cpu[row][t])
            for t in range(1, length)
        ]
        if reason is not StopReason.MAX_LEN:
            steps.append(StepRecord(step=length, best_rank=ranks_cpu[row][length], passed=passed_cpu[row][length], item=None))
        out.append(GeneratedSequence(seed_index=seed_index[row], items=sequences_cpu[row][:length], steps=steps, stop_reason=reason))
    return out
