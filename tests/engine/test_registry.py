"""Tests for the directory model registry."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import torch

from rsir_engine.checkpoint import ITEM_EMBEDDING_KEY, MANIFEST_FILE, write_checkpoint
from rsir_engine.errors import (
    CheckpointMismatchError,
    ConfigError,
    RegistryError,
    VersionNotFoundError,
)
from rsir_engine.registry import ModelRegistry

ITEM_IDS: list[int | str] = [0, "a", 7, 9, "x"]


def make_state_dict() -> dict[str, torch.Tensor]:
    """Build a tiny state dict with one padding row in the item embedding."""
    return {
        ITEM_EMBEDDING_KEY: torch.zeros(len(ITEM_IDS) + 1, 4),
        "proj.weight": torch.randn(4, 4),
    }


def make_manifest(**overrides: object) -> dict[str, object]:
    """Build a manifest with every required caller-supplied field."""
    manifest: dict[str, object] = {
        "architecture": "sasrec",
        "architecture_config": {"hidden": 4},
        "item_ids": list(ITEM_IDS),
        "padding": {"side": "left", "index": 0},
        "position_scheme": "learned",
        "dataset": {"name": "tiny", "fingerprint": "abc123"},
    }
    manifest.update(overrides)
    return manifest


def publish_three(root: str, worker: int, barrier, results) -> None:
    """Publish three versions from a child process and report the version numbers."""
    registry = ModelRegistry(root)
    # Both workers start publishing together, so their lock requests overlap.
    barrier.wait(timeout=60)
    versions = []
    for attempt in range(3):
        manifest = make_manifest(run_id=f"worker{worker}-{attempt}")
        published = registry.publish(make_state_dict(), manifest)
        versions.append(published.version)
    results.put(versions)


def test_registry_versions_increment(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")

    first = registry.publish(make_state_dict(), make_manifest())
    second = registry.publish(make_state_dict(), make_manifest(parent_version=1, round=1))

    assert first.version == 1
    assert second.version == 2
    assert second.manifest["version"] == 2
    assert second.path.name == "v000002"
    assert [v.version for v in registry.list_versions()] == [1, 2]
    assert registry.latest().version == 2


def test_registry_empty_latest_none(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")

    assert registry.latest() is None
    assert registry.list_versions() == []
    assert registry.aliases() == {}
    assert registry.alias_history() == []


def test_registry_version_properties(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest())
    manifest = make_manifest(parent_version=1, round=3, metrics={"ndcg@10": 0.5})

    published = registry.publish(make_state_dict(), manifest)

    assert published.parent_version == 1
    assert published.round == 3
    assert published.metrics == {"ndcg@10": 0.5}
    assert published.dataset_name == "tiny"
    assert published.created_at is not None


def test_registry_load_round_trip(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    state_dict = make_state_dict()
    registry.publish(state_dict, make_manifest())

    tensors, manifest = registry.load(1)

    assert torch.equal(tensors["proj.weight"], state_dict["proj.weight"])
    assert manifest["item_ids"] == ITEM_IDS
    assert manifest["version"] == 1


def test_registry_load_detects_mismatch(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    published = registry.publish(make_state_dict(), make_manifest())
    manifest_path = published.path / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["item_ids"] = [1, "a", 7, 9, "x"]
    manifest_path.write_text(json.dumps(manifest))

    with pytest.raises(CheckpointMismatchError):
        registry.load(1)


def test_registry_publish_key_idempotent(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")

    first = registry.publish(make_state_dict(), make_manifest(), publish_key="job-42")
    again = registry.publish(make_state_dict(), make_manifest(), publish_key="job-42")

    assert again.version == first.version
    assert len(registry.list_versions()) == 1
    assert first.manifest["publish_key"] == "job-42"
    assert registry.find_by_publish_key("job-42").version == first.version
    assert registry.find_by_publish_key("job-43") is None


def test_registry_publish_key_conflict_rejected(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")

    with pytest.raises(ConfigError, match="job-1"):
        registry.publish(make_state_dict(), make_manifest(publish_key="job-1"), publish_key="job-2")


def test_registry_get_by_string_and_alias(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest())
    registry.publish(make_state_dict(), make_manifest())
    registry.set_alias("champion", 2)

    assert registry.get("1").version == 1
    assert registry.get(2).version == 2
    assert registry.get("champion").version == 2
    assert registry.get(2).aliases == ("champion",)
    assert registry.get(1).aliases == ()


def test_registry_alias_history_and_rollback(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest())
    registry.publish(make_state_dict(), make_manifest())

    registry.set_alias("champion", 1, reason="first model", actor="alice")
    registry.set_alias("champion", 2, reason="better ndcg")
    rollback = registry.set_alias("champion", 1, reason="rollback", actor="bob")

    assert registry.aliases() == {"champion": 1}
    assert registry.get("champion").version == 1
    assert rollback.from_version == 2
    assert rollback.to_version == 1

    history = registry.alias_history("champion")
    assert [(c.from_version, c.to_version) for c in history] == [(None, 1), (1, 2), (2, 1)]
    assert [c.reason for c in history] == ["first model", "better ndcg", "rollback"]
    assert [c.actor for c in history] == ["alice", None, "bob"]
    assert all(c.at.endswith("+00:00") for c in history)


def test_registry_alias_history_filters_by_alias(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest())
    registry.set_alias("champion", 1)
    registry.set_alias("candidate", "champion")

    assert registry.aliases() == {"candidate": 1, "champion": 1}
    assert [c.alias for c in registry.alias_history()] == ["champion", "candidate"]
    assert [c.alias for c in registry.alias_history("candidate")] == ["candidate"]


def test_registry_unknown_version_not_found(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest())

    with pytest.raises(VersionNotFoundError, match="model version 7 not found"):
        registry.get(7)
    with pytest.raises(VersionNotFoundError, match="'champion' not found"):
        registry.get("champion")
    with pytest.raises(VersionNotFoundError):
        registry.load(7)
    with pytest.raises(VersionNotFoundError):
        registry.set_alias("champion", 7)
    assert registry.aliases() == {}


def test_registry_invalid_alias_rejected(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest())

    for name in ["123", "Champion", "", "-x", "a b", "a" * 65]:
        with pytest.raises(ConfigError):
            registry.set_alias(name, 1)
    assert registry.aliases() == {}


def test_registry_corrupt_aliases_file(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    (tmp_path / "models" / "aliases.json").write_text("{not json")

    with pytest.raises(RegistryError, match="aliases.json"):
        registry.aliases()


def test_registry_leftover_temp_folder_ignored(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest())
    versions_dir = tmp_path / "models" / "versions"
    # What a publish that crashed before its rename leaves behind.
    leftover = versions_dir / ".v000002.tmp-deadbeef"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")

    assert [v.version for v in registry.list_versions()] == [1]
    published = registry.publish(make_state_dict(), make_manifest())
    assert published.version == 2
    assert [v.version for v in registry.list_versions()] == [1, 2]


def test_registry_incomplete_version_skipped(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest())
    (tmp_path / "models" / "versions" / "v000002").mkdir()

    assert [v.version for v in registry.list_versions()] == [1]
    with pytest.raises(VersionNotFoundError):
        registry.get(2)
    # The empty folder keeps its number, so the next publish does not collide with it.
    assert registry.publish(make_state_dict(), make_manifest()).version == 3


def test_registry_lineage_follows_parents(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest())
    registry.publish(make_state_dict(), make_manifest(parent_version=1))
    registry.publish(make_state_dict(), make_manifest())
    registry.publish(make_state_dict(), make_manifest(parent_version=2))

    assert [v.version for v in registry.lineage(4)] == [4, 2, 1]
    assert [v.version for v in registry.lineage(3)] == [3]


def test_registry_lineage_stops_at_missing_parent(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest(parent_version=99))

    assert [v.version for v in registry.lineage(1)] == [1]


def test_registry_lineage_stops_on_cycle(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(make_state_dict(), make_manifest(parent_version=2))
    registry.publish(make_state_dict(), make_manifest(parent_version=1))

    assert [v.version for v in registry.lineage(2)] == [2, 1]


def test_registry_from_env_uses_variable(tmp_path: Path) -> None:
    registry = ModelRegistry.from_env({"RSIR_CHECKPOINT_DIR": str(tmp_path / "env-models")})

    assert registry.root == tmp_path / "env-models"
    assert (tmp_path / "env-models" / "versions").is_dir()


def test_registry_existing_folder_not_overwritten(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    target = tmp_path / "models" / "versions" / "v000001"
    write_checkpoint(target, make_state_dict(), make_manifest(run_id="outside"))

    published = registry.publish(make_state_dict(), make_manifest(run_id="inside"))

    assert published.version == 2
    assert registry.get(1).manifest["run_id"] == "outside"


def test_registry_concurrent_publish_distinct(tmp_path: Path) -> None:
    root = tmp_path / "models"
    ModelRegistry(root)
    # spawn, not fork, because a forked child of a process that has used torch's OpenMP
    # thread pool may hang.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    workers = [
        context.Process(target=publish_three, args=(str(root), worker, barrier, results))
        for worker in range(2)
    ]
    for process in workers:
        process.start()

    try:
        reported = [results.get(timeout=120) for _ in workers]
    finally:
        for process in workers:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()

    assert [process.exitcode for process in workers] == [0, 0]
    all_versions = sorted(v for versions in reported for v in versions)
    assert all_versions == [1, 2, 3, 4, 5, 6]
    assert [v.version for v in ModelRegistry(root).list_versions()] == [1, 2, 3, 4, 5, 6]
