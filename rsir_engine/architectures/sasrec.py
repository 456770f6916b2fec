"""SASRec: self-attentive sequential recommendation.

Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from rsir_engine.errors import ConfigError

__all__ = ["SASRec", "SASRecConfig"]

PADDING_SIDE = "left"
POSITION_SCHEME = "from_first_item"


@dataclass(frozen=True)
class SASRecConfig:
    """Size and regularisation of a SASRec model."""

    num_items: int  # real items; embedding rows are num_items + 1 because row 0 is padding
    max_len: int = 50  # items of context the model reads
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    inner_size: int = 256  # width of the feed-forward layer
    dropout: float = 0.2  # on embeddings, attention weights and residual branches
    layer_norm_eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.num_items < 1:
            raise ConfigError(f"num_items must be at least 1, got {self.num_items}")
        if self.max_len < 2:
            raise ConfigError(f"max_len must be at least 2, got {self.max_len}")
        if self.hidden_size % self.num_heads != 0:
            raise ConfigError(
                f"hidden_size {self.hidden_size} must be a multiple of num_heads {self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        """Return the config as a JSON-ready dict."""
        return asdict(self)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention from each position to itself and earlier real items."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attn_dropout = config.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, L, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, L, C/H)
        k = k.view(B, L, self.num_heads, C // self.num_heads).transpose(1, 2)
        v = v.view(B, L, self.num_heads, C // self.num_heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, H, L, C/H)
        y = y.transpose(1, 2).contiguous().view(B, L, C)
        return self.proj(y)

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attend from one new position (B, 1, C) over the cached keys and values plus its own."""
        B, _, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, 1, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, 1, C/H)
        k = k.view(B, 1, self.num_heads, C // self.num_heads).transpose(1, 2)
        v = v.view(B, 1, self.num_heads, C // self.num_heads).transpose(1, 2)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)  # (B, H, T, C/H)
            v = torch.cat([cache[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v)  # every cached position is earlier and real
        y = y.transpose(1, 2).contiguous().view(B, 1, C)
        return self.proj(y), (k, v)


class FeedForward(nn.Module):
    """Position-wise two-layer network with GELU."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, config.inner_size)
        self.out = nn.Linear(config.inner_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: attention then feed-forward, each with a residual."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_ffn = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln_attn(x), attn_mask))
        x = x + self.dropout(self.ffn(self.ln_ffn(x)))
        return x

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run one new position (B, 1, C) through the block, in eval mode."""
        attended, cache = self.attn.step(self.ln_attn(x), cache)
        x = x + attended
        x = x + self.ffn(self.ln_ffn(x))
        return x, cache


class SASRec(nn.Module):
    """Next-item model over left-padded item sequences.

    Input is ``(B, L)`` internal item ids with ``0`` as padding; logits over
    the catalogue share weights with the item embedding.

    NOTE: Positions are counted from each sequence's first real item rather
    than from the first slot of the padded tensor, so the same sequence gives
    the same scores whether it is padded on the left or on the right. The
    original SASRec indexes positions by slot. Pre-norm blocks and GELU follow
    the authors' public code.
    """

    architecture = "sasrec"
    padding_side = PADDING_SIDE
    position_scheme = POSITION_SCHEME

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.hidden_size)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
        self.ln_final = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def hidden_states(self, items: torch.Tensor) -> torch.Tensor:
        """Encode ``items`` (B, L) into per-position states (B, L, D).

        Sequences longer than ``max_len`` must be cut by the caller. States at
        padding positions are finite but meaningless.
        """
        B, L = items.shape
        if L > self.config.max_len:
            raise ConfigError(f"sequence length {L} exceeds the model's max_len {self.config.max_len}")
        valid = items > 0  # (B, L), padding is id 0, never judged from embedding values
        positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, L), 0 at the first real item

        x = self.item_embedding(items) * math.sqrt(self.config.hidden_size)
        x = x + self.position_embedding(positions)  # (B, L, D)
        x = self.emb_dropout(x) * valid.unsqueeze(-1)

        causal = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()  # (L, L)
        diagonal = torch.eye(L, dtype=torch.bool, device=items.device)
        # A real query attends to earlier real keys. A padding query attends only
        # to itself, which keeps its softmax row finite.
        attn_mask = causal & (valid.unsqueeze(1) | diagonal)  # (B, L, L)
        attn_mask = attn_mask.unsqueeze(1)  # (B, 1, L, L)

        for block in self.blocks:
            x = block(x, attn_mask) * valid.unsqueeze(-1)
        return self.ln_final(x)

    def forward(
        self, items: torch.Tensor, targets: torch.Tensor | None = None, loss_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Score the next item, at every position or only where a loss counts.

        Args:
            items: (B, L) input ids, 0 = padding.
            targets: (B, L) next-item ids; 0 marks positions without a target.
            loss_mask: (B, L) bool, positions whose loss counts; defaults to
                ``targets > 0``.

        Returns:
            Without targets, ``(logits, None)`` with logits (B, L, N+1). With
            targets, ``(logits, loss)`` where logits (M, N+1) cover only the M
            counted positions, because scoring the catalogue at positions that
            carry no loss is most of the cost of a step. The loss is the mean
            cross-entropy over them.
        """
        states = self.hidden_states(items)  # (B, L, D)
        if targets is None:
            return states @ self.item_embedding.weight.T, None  # (B, L, N+1)
        mask = targets > 0 if loss_mask is None else loss_mask & (targets > 0)
        logits = states[mask] @ self.item_embedding.weight.T  # (M, N+1)
        logits[:, 0] = float("-inf")  # padding is never a valid target
        loss = F.cross_entropy(logits, targets[mask])
        return logits, loss

    def decode_step(
        self, items: torch.Tensor, position: int, cache: list[tuple[torch.Tensor, torch.Tensor]] | None
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Score the next item after appending ``items`` (B,) at ``position``, reusing earlier keys and values.

        Every row must have exactly ``position`` real items before this one and
        no padding, as in generation, where all live sequences grow together.
        The result equals ``score_last`` on the whole prefix up to float
        rounding, at the cost of one position instead of the whole prefix.

        Args:
            items: (B,) the item appended to every row.
            position: 0-based index of that item, below ``max_len``.
            cache: per block, keys and values (B, H, position, C/H); None at position 0.

        Returns:
            (B, N+1) scores with column 0 at ``-inf``, and the extended cache.
        """
        if position >= self.config.max_len:
            raise ConfigError(f"position {position} exceeds the model's max_len {self.config.max_len}")
        if self.training:
            raise RuntimeError("decode_step runs in eval mode only; call model.eval() first")
        B = items.shape[0]
        x = self.item_embedding(items).unsqueeze(1) * math.sqrt(self.config.hidden_size)  # (B, 1, D)
        x = x + self.position_embedding.weight[position].view(1, 1, -1)
        new_cache: list[tuple[torch.Tensor, torch.Tensor]] = []
        for index, block in enumerate(self.blocks):
            x, block_cache = block.step(x, cache[index] if cache is not None else None)
            new_cache.append(block_cache)
        states = self.ln_final(x).view(B, -1)  # (B, D)
        scores = states @ self.item_embedding.weight.T  # (B, N+1)
        scores[:, 0] = float("-inf")
        return scores, new_cache

    def last_states(self, items: torch.Tensor) -> torch.Tensor:
        """Return the state at the last slot of left-padded ``items`` (B, L) as (B, D)."""
        return self.hidden_states(items)[:, -1, :]

    def score_last(self, items: torch.Tensor) -> torch.Tensor:
        """Score every catalogue item as the next one after left-padded ``items`` (B, L).

        Returns:
            (B, N+1) scores; column 0 (padding) is ``-inf``.
        """
        scores = self.last_states(items) @ self.item_embedding.weight.T  # (B, N+1)
        scores[:, 0] = float("-inf")
        return scores
