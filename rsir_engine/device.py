"""Pick the torch device the engine runs on."""

from __future__ import annotations

import torch

from rsir_engine.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Return ``cuda`` when ``name`` is ``auto`` and a GPU is visible, else the named device.

    Raises:
        ConfigError: ``cuda`` was requested but no GPU is visible, or the name is unknown.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was requested but no CUDA GPU is visible; use --device cpu or auto")
    return device
