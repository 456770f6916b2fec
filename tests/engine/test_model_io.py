"""Tests for publishing a trained model to a registry and loading it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rsir_engine.architectures import SASRec
from rsir_engine.checkpoint import MANIFEST_FILE, WEIGHTS_FILE
from rsir_engine.data import SequenceDataset
from rsir_engine.errors import CheckpointCorruptError, CheckpointMismatchError
from rsir_engine.model_io import build_manifest, load_checkpoint_dir, load_version, publish_model
from rsir_engine.registry import ModelRegistry, ModelVersion
from rsir_engine.sequences import pad_left

PROBE_HISTORIES = [[1, 2, 3], [10, 11], [29, 30, 1, 2]]


@pytest.fixture(scope="function")
def registry(tmp_path: Path) -> ModelRegistry:
    """Return an empty registry in a temporary folder."""
    return ModelRegistry(tmp_path / "models")


@pytest.fixture(scope="function")
def published(registry: ModelRegistry, trained_model: SASRec, cyclic_dataset: SequenceDataset) -> ModelVersion:
    """Publish the trained tiny model as version 1."""
    manifest = build_manifest(
        trained_model,
        cyclic_dataset,
        round_index=0,
        metrics={"valid": {"ndcg@10": 0.5}},
        run_id="test-run",
    )
    return publish_model(registry, trained_model, manifest, publish_key="test-run:round0")


def scores_of(model: torch.nn.Module) -> torch.Tensor:
    """Score the probe histories with ``model``."""
    with torch.inference_mode():
        return model.score_last(pad_left(PROBE_HISTORIES, model.config.max_len))


def test_load_version_same_scores(registry: ModelRegistry, published: ModelVersion, trained_model: SASRec) -> None:
    loaded = load_version(registry, published.version, device="cpu")

    torch.testing.assert_close(scores_of(loaded.model), scores_of(trained_model), rtol=0, atol=0)


def test_load_version_item_map_and_version(
    registry: ModelRegistry, published: ModelVersion, cyclic_dataset: SequenceDataset
) -> None:
    loaded = load_version(registry, "1")

    assert loaded.version == 1
    assert loaded.item_map == cyclic_dataset.item_map
    assert loaded.device.type == "cpu"
    assert loaded.model.training is False


def test_load_version_by_alias(registry: ModelRegistry, published: ModelVersion) -> None:
    registry.set_alias("champion", published.version, reason="test", actor="pytest")

    loaded = load_version(registry, "champion")

    assert loaded.version == published.version


def test_build_manifest_records_model_and_data(
    published: ModelVersion, trained_model: SASRec, cyclic_dataset: SequenceDataset
) -> None:
    manifest = published.manifest

    assert manifest["architecture"] == "sasrec"
    assert manifest["architecture_config"] == trained_model.config.to_dict()
    assert manifest["num_items"] == cyclic_dataset.num_items
    assert manifest["padding"] == {"side": "left", "index": 0}
    assert manifest["dataset"]["fingerprint"] == cyclic_dataset.fingerprint
    assert manifest["publish_key"] == "test-run:round0"
    assert manifest["run_id"] == "test-run"


def test_load_checkpoint_dir_same_scores(published: ModelVersion, trained_model: SASRec) -> None:
    loaded = load_checkpoint_dir(published.path)

    torch.testing.assert_close(scores_of(loaded.model), scores_of(trained_model), rtol=0, atol=0)


def test_load_version_truncated_weights(registry: ModelRegistry, published: ModelVersion) -> None:
    weights = published.path / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])

    with pytest.raises(CheckpointCorruptError, match="truncated") as caught:
        load_version(registry, published.version)

    assert WEIGHTS_FILE in str(caught.value)


def test_load_version_edited_item_map(registry: ModelRegistry, published: ModelVersion) -> None:
    path = published.path / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["item_ids"][0], manifest["item_ids"][1] = manifest["item_ids"][1], manifest["item_ids"][0]
    path.write_text(json.dumps(manifest))

    with pytest.raises(CheckpointMismatchError, match="id map hash mismatch") as caught:
        load_version(registry, published.version)

    assert "item ids were changed" in str(caught.value)


def test_load_version_weights_from_other_vocabulary(
    registry: ModelRegistry, published: ModelVersion, cyclic_dataset: SequenceDataset, tiny_configs
) -> None:
    torch.manual_seed(0)
    other = SASRec(tiny_configs.model(cyclic_dataset.num_items + 5))
    # A model.safetensors copied in from a model with five more items.
    save_file(other.state_dict(), str(published.path / WEIGHTS_FILE))

    with pytest.raises(CheckpointMismatchError, match="vocabulary mismatch"):
        load_version(registry, published.version)
