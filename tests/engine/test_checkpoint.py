"""Tests for writing and reading checkpoint folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rsir_engine.checkpoint import (
    FORMAT_VERSION,
    ITEM_EMBEDDING_KEY,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    item_map_hash,
    read_checkpoint,
    write_checkpoint,
)
from rsir_engine.errors import CheckpointCorruptError, CheckpointMismatchError, ConfigError

# Raw id 0 is an ordinary item here: internal id 1 maps to it, row 0 stays padding.
ITEM_IDS: list[int | str] = [0, "a", 7, 9, "x"]


def make_state_dict(num_items: int = len(ITEM_IDS)) -> dict[str, torch.Tensor]:
    """Build a tiny state dict whose item embedding has one padding row."""
    generator = torch.Generator().manual_seed(0)
    return {
        ITEM_EMBEDDING_KEY: torch.randn(num_items + 1, 4, generator=generator),
        "proj.weight": torch.randn(4, 4, generator=generator),
    }


def make_manifest(**overrides: object) -> dict[str, object]:
    """Build a manifest with every required caller-supplied field."""
    manifest: dict[str, object] = {
        "architecture": "sasrec",
        "architecture_config": {"hidden": 4, "layers": 1},
        "item_ids": list(ITEM_IDS),
        "padding": {"side": "left", "index": 0},
        "position_scheme": "learned",
        "dataset": {"name": "tiny", "fingerprint": "abc123"},
        "round": 2,
        "metrics": {"ndcg@10": 0.25},
    }
    manifest.update(overrides)
    return manifest


def rewrite_manifest(folder: Path, **changes: object) -> None:
    """Edit fields of a written manifest in place, as a person with an editor would."""
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_item_map_hash_keeps_id_types() -> None:
    assert item_map_hash([1, 2]) == item_map_hash([1, 2])
    assert item_map_hash([1, 2]) != item_map_hash(["1", "2"])
    assert item_map_hash([1, 2]) != item_map_hash([2, 1])
    assert len(item_map_hash(ITEM_IDS)) == 64


def test_item_map_hash_rejects_float_id() -> None:
    with pytest.raises(ConfigError, match="1.5"):
        item_map_hash([1, 1.5])


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    state_dict = make_state_dict()
    folder = write_checkpoint(tmp_path / "ckpt", state_dict, make_manifest())

    tensors, manifest = read_checkpoint(folder)

    assert set(tensors) == set(state_dict)
    for name, tensor in state_dict.items():
        assert torch.equal(tensors[name], tensor)
    assert manifest["item_ids"] == ITEM_IDS
    assert manifest["num_items"] == len(ITEM_IDS)
    assert manifest["item_map_sha256"] == item_map_hash(ITEM_IDS)
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["architecture_config"] == {"hidden": 4, "layers": 1}
    assert manifest["padding"] == {"side": "left", "index": 0}
    assert manifest["dataset"] == {"name": "tiny", "fingerprint": "abc123"}
    assert manifest["round"] == 2
    assert manifest["metrics"] == {"ndcg@10": 0.25}
    assert manifest["created_at"].endswith("+00:00")


def test_checkpoint_leaves_no_temp_folder(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "ckpt", make_state_dict(), make_manifest())

    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [MANIFEST_FILE, WEIGHTS_FILE]


def test_checkpoint_keeps_given_created_at(tmp_path: Path) -> None:
    manifest = make_manifest(created_at="2024-01-02T03:04:05+00:00")
    folder = write_checkpoint(tmp_path / "ckpt", make_state_dict(), manifest)

    _, read_back = read_checkpoint(folder)

    assert read_back["created_at"] == "2024-01-02T03:04:05+00:00"


def test_checkpoint_saves_tied_weights(tmp_path: Path) -> None:
    state_dict = make_state_dict()
    state_dict["output.weight"] = state_dict[ITEM_EMBEDDING_KEY]
    folder = write_checkpoint(tmp_path / "ckpt", state_dict, make_manifest())

    tensors, _ = read_checkpoint(folder)

    assert torch.equal(tensors["output.weight"], state_dict[ITEM_EMBEDDING_KEY])


def test_checkpoint_saves_noncontiguous_tensor(tmp_path: Path) -> None:
    state_dict = make_state_dict()
    state_dict["proj.weight"] = state_dict["proj.weight"].t()
    folder = write_checkpoint(tmp_path / "ckpt", state_dict, make_manifest())

    tensors, _ = read_checkpoint(folder)

    assert torch.equal(tensors["proj.weight"], state_dict["proj.weight"])


def test_checkpoint_truncated_weights_corrupt(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", make_state_dict(), make_manifest())
    weights = folder / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 10])

    with pytest.raises(CheckpointCorruptError, match="truncated"):
        read_checkpoint(folder)


def test_checkpoint_missing_manifest_corrupt(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", make_state_dict(), make_manifest())
    (folder / MANIFEST_FILE).unlink()

    with pytest.raises(CheckpointCorruptError, match=MANIFEST_FILE):
        read_checkpoint(folder)


def test_checkpoint_missing_weights_corrupt(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", make_state_dict(), make_manifest())
    (folder / WEIGHTS_FILE).unlink()

    with pytest.raises(CheckpointCorruptError, match=WEIGHTS_FILE):
        read_checkpoint(folder)


def test_checkpoint_invalid_json_corrupt(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", make_state_dict(), make_manifest())
    (folder / MANIFEST_FILE).write_text('{"architecture": "sasrec",')

    with pytest.raises(CheckpointCorruptError, match="not valid JSON"):
        read_checkpoint(folder)


def test_checkpoint_missing_field_corrupt(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", make_state_dict(), make_manifest())
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    del manifest["position_scheme"]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))

    with pytest.raises(CheckpointCorruptError, match="position_scheme"):
        read_checkpoint(folder)


def test_checkpoint_edited_item_ids_mismatch(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", make_state_dict(), make_manifest())
    # Same length, one id turned from int to str: only the hash can catch this.
    rewrite_manifest(folder, item_ids=["0", "a", 7, 9, "x"])

    with pytest.raises(CheckpointMismatchError, match="hash mismatch") as excinfo:
        read_checkpoint(folder)

    message = str(excinfo.value)
    assert item_map_hash(ITEM_IDS) in message
    assert item_map_hash(["0", "a", 7, 9, "x"]) in message
    assert str(folder) in message


def test_checkpoint_vocabulary_mismatch(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", make_state_dict(), make_manifest())
    fewer_ids = ITEM_IDS[:4]
    rewrite_manifest(
        folder, item_ids=fewer_ids, num_items=4, item_map_sha256=item_map_hash(fewer_ids)
    )

    with pytest.raises(CheckpointMismatchError) as excinfo:
        read_checkpoint(folder)

    message = str(excinfo.value)
    assert "6 rows" in message
    assert "num_items=4" in message


def test_checkpoint_num_items_mismatch(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", make_state_dict(), make_manifest())
    rewrite_manifest(folder, num_items=4)

    with pytest.raises(CheckpointMismatchError, match="num_items is 4"):
        read_checkpoint(folder)


def test_checkpoint_swapped_weights_mismatch(tmp_path: Path) -> None:
    first = write_checkpoint(tmp_path / "first", make_state_dict(), make_manifest())
    other_ids = [1, 2, 3, 4, 5]
    second = write_checkpoint(
        tmp_path / "second", make_state_dict(), make_manifest(item_ids=other_ids)
    )
    (first / WEIGHTS_FILE).write_bytes((second / WEIGHTS_FILE).read_bytes())

    with pytest.raises(CheckpointMismatchError, match="hash mismatch"):
        read_checkpoint(first)


def test_checkpoint_existing_folder_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()

    with pytest.raises(FileExistsError):
        write_checkpoint(folder, make_state_dict(), make_manifest())

    assert list(folder.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_checkpoint_write_embedding_shape_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(6, hidden\)"):
        write_checkpoint(tmp_path / "ckpt", make_state_dict(num_items=4), make_manifest())

    assert not (tmp_path / "ckpt").exists()


def test_checkpoint_write_missing_item_ids_rejected(tmp_path: Path) -> None:
    manifest = make_manifest()
    del manifest["item_ids"]

    with pytest.raises(ConfigError, match="item_ids"):
        write_checkpoint(tmp_path / "ckpt", make_state_dict(), manifest)


def test_checkpoint_write_missing_field_rejected(tmp_path: Path) -> None:
    manifest = make_manifest()
    del manifest["dataset"]

    with pytest.raises(ConfigError, match="dataset"):
        write_checkpoint(tmp_path / "ckpt", make_state_dict(), manifest)


def test_checkpoint_write_duplicate_ids_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicates"):
        write_checkpoint(
            tmp_path / "ckpt", make_state_dict(), make_manifest(item_ids=[0, "a", 7, 7, "x"])
        )


def test_checkpoint_write_wrong_num_items_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_items"):
        write_checkpoint(tmp_path / "ckpt", make_state_dict(), make_manifest(num_items=4))
