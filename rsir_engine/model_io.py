"""Save a trained model with everything needed to serve it, and load it back."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rsir_engine.architectures import build_model
from rsir_engine.checkpoint import read_checkpoint
from rsir_engine.data import ItemMap, SequenceDataset
from rsir_engine.errors import CheckpointMismatchError
from rsir_engine.registry import ModelRegistry, ModelVersion

__all__ = ["LoadedModel", "build_manifest", "load_checkpoint_dir", "load_version", "publish_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, with its item map and manifest."""

    model: nn.Module
    item_map: ItemMap
    manifest: dict[str, Any]
    version: int | None = None

    @property
    def device(self) -> torch.device:
        """Device the weights live on."""
        return next(self.model.parameters()).device


def build_manifest(
    model: nn.Module,
    dataset: SequenceDataset,
    *,
    parent_version: int | None = None,
    round_index: int | None = None,
    rsir_params: dict[str, Any] | None = None,
    train_params: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    run_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe ``model`` for a checkpoint: architecture, id map, data and lineage."""
    manifest: dict[str, Any] = {
        "architecture": model.architecture,
        "architecture_config": model.config.to_dict(),
        "item_ids": list(dataset.item_map.raw_ids),
        "num_items": dataset.num_items,
        "padding": {"side": model.padding_side, "index": 0},
        "position_scheme": model.position_scheme,
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "users": dataset.num_users,
            "interactions": dataset.num_interactions,
        },
        "parent_version": parent_version,
        "round": round_index,
        "rsir_params": rsir_params or {},
        "train_params": train_params or {},
        "metrics": metrics or {},
        "run_id": run_id,
    }
    if extra:
        manifest.update(extra)
    return manifest


def publish_model(
    registry: ModelRegistry, model: nn.Module, manifest: dict[str, Any], *, publish_key: str | None = None
) -> ModelVersion:
    """Publish ``model``'s weights with ``manifest`` as a new registry version."""
    return registry.publish(model.state_dict(), manifest, publish_key=publish_key)


def _instantiate(weights: dict[str, torch.Tensor], manifest: dict[str, Any], device: torch.device, source: str) -> nn.Module:
    model = build_model(manifest["architecture"], manifest["architecture_config"])
    if getattr(model, "padding_side", None) != manifest["padding"].get("side") or getattr(
        model, "position_scheme", None
    ) != manifest["position_scheme"]:
        raise CheckpointMismatchError(
            f"{source}: checkpoint uses padding {manifest['padding']} and positions {manifest['position_scheme']!r}, "
            f"but this engine's {manifest['architecture']} uses {model.padding_side!r} and {model.position_scheme!r}; "
            "retrain or publish it again with this engine"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointMismatchError(f"{source}: weights do not fit the manifest's architecture config: {exc}") from None
    return model.to(device).eval()


def load_checkpoint_dir(path: str | Path, *, device: torch.device | str = "cpu") -> LoadedModel:
    """Load and check a checkpoint folder (``model.safetensors`` + ``manifest.json``)."""
    weights, manifest = read_checkpoint(path)
    model = _instantiate(weights, manifest, torch.device(device), str(path))
    return LoadedModel(model=model, item_map=ItemMap(tuple(manifest["item_ids"])), manifest=manifest, version=manifest.get("version"))


def load_version(registry: ModelRegistry, version: int | str, *, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a registry version or alias onto ``device``, checking it completely."""
    entry = registry.get(version)
    loaded = load_checkpoint_dir(entry.path, device=device)
    logger.info("loaded model version %d from %s onto %s", entry.version, entry.path, device)
    return LoadedModel(model=loaded.model, item_map=loaded.item_map, manifest=loaded.manifest, version=entry.version)
