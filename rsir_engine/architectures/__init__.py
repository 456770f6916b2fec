"""Sequential recommenders the engine can train, one module each.

Every architecture is an ``nn.Module`` with a frozen dataclass config and the
same contract: ``forward(items, targets, loss_mask) -> (logits, loss)``,
``hidden_states(items)``, ``score_last(items)`` over left-padded id tensors,
and class attributes ``architecture``, ``padding_side`` and ``position_scheme``
that checkpoints record.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from rsir_engine.architectures.sasrec import SASRec, SASRecConfig
from rsir_engine.errors import ConfigError

__all__ = ["ARCHITECTURES", "SASRec", "SASRecConfig", "build_model"]

# name -> (model class, config class)
ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    "sasrec": (SASRec, SASRecConfig),
}


def build_model(architecture: str, config: dict[str, Any] | Any) -> nn.Module:
    """Build an untrained model of ``architecture`` from a config object or dict.

    Raises:
        ConfigError: unknown architecture or config fields.
    """
    if architecture not in ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture {architecture!r}; available: {', '.join(sorted(ARCHITECTURES))}"
        )
    model_cls, config_cls = ARCHITECTURES[architecture]
    if isinstance(config, dict):
        try:
            config = config_cls(**config)
        except TypeError as exc:
            raise ConfigError(f"invalid {architecture} config: {exc}") from None
    return model_cls(config)
