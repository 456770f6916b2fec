"""Tests for the ``rsir`` command line: run, augment and data fetch, called through ``main``."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from rsir_engine.architectures import SASRec
from rsir_engine.cli import main
from rsir_engine.data import SequenceDataset, load_interactions
from rsir_engine.model_io import build_manifest, publish_model
from rsir_engine.registry import ModelRegistry


@dataclass
class CommandResult:
    """Exit status and captured output of one ``rsir`` call."""

    status: int
    stdout: str
    stderr: str


def run_cli(*argv: str) -> CommandResult:
    """Call ``rsir`` with ``argv`` and capture what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return CommandResult(status, out.getvalue(), err.getvalue())


@dataclass
class RunCommand:
    """A finished ``rsir run`` and the folders it wrote to."""

    output: CommandResult
    runs_dir: Path
    checkpoint_dir: Path


@pytest.fixture(scope="module")
def run_command(write_cyclic_csv, tmp_path_factory: pytest.TempPathFactory) -> RunCommand:
    """Run one tiny round through ``rsir run`` on a CSV file."""
    data = write_cyclic_csv("tiny.csv", num_users=30, num_items=20, length=8)
    tmp = tmp_path_factory.mktemp("cli_run")
    output = run_cli(
        "run",
        "--dataset", str(data),
        "--rounds", "1",
        "--epochs", "2",
        "--patience", "1",
        "--model-max-len", "8",
        "--hidden-size", "16",
        "--layers", "1",
        "--heads", "1",
        "--runs-dir", str(tmp / "runs"),
        "--checkpoint-dir", str(tmp / "models"),
        "--device", "cpu",
        "--no-progress",
    )  # fmt: skip
    return RunCommand(output, tmp / "runs", tmp / "models")


def run_folder(run: RunCommand) -> Path:
    """Return the single run folder that ``rsir run`` created."""
    (folder,) = [path for path in run.runs_dir.iterdir() if path.is_dir()]
    return folder


def test_cli_run_exits_zero(run_command: RunCommand) -> None:
    assert run_command.output.status == 0, run_command.output.stderr


def test_cli_run_prints_table(run_command: RunCommand) -> None:
    lines = run_command.output.stdout.splitlines()

    assert lines[0].split()[:3] == ["round", "real", "synth"]
    assert "test_R@10" in lines[0]
    assert [line.split()[0] for line in lines[2:4]] == ["0", "1"]
    assert "history excluded: no" in run_command.output.stdout


def test_cli_run_writes_results_json(run_command: RunCommand) -> None:
    results = json.loads((run_folder(run_command) / "results.json").read_text())

    assert [row["round"] for row in results["table"]] == [0, 1]
    assert results["dataset"] == "tiny"
    assert results["config"]["rounds"] == 1


def test_cli_run_writes_results_csv(run_command: RunCommand) -> None:
    with open(run_folder(run_command) / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))

    assert [row["round"] for row in rows] == ["0", "1"]
    assert "test_ndcg@10" in rows[0]


def test_cli_run_writes_plot(run_command: RunCommand) -> None:
    plot = run_folder(run_command) / "metrics.png"

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_run_publishes_versions(run_command: RunCommand) -> None:
    registry = ModelRegistry(run_command.checkpoint_dir)

    assert [entry.version for entry in registry.list_versions()] == [1, 2]


def test_cli_run_unknown_dataset_exits_2(tmp_path: Path) -> None:
    output = run_cli("run", "--dataset", str(tmp_path / "absent.csv"), "--device", "cpu", "--runs-dir", str(tmp_path))

    assert output.status == 2
    assert "absent.csv" in output.stderr


def test_cli_run_zero_byte_file_exits_2(tmp_path: Path) -> None:
    data = tmp_path / "empty.csv"
    data.write_bytes(b"")

    output = run_cli("run", "--dataset", str(data), "--device", "cpu", "--runs-dir", str(tmp_path))

    assert output.status == 2
    assert "empty.csv" in output.stderr


@pytest.fixture(scope="module")
def champion_dir(
    trained_model: SASRec, cyclic_dataset: SequenceDataset, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Publish the trained tiny model as the champion of a new registry and return its folder."""
    folder = tmp_path_factory.mktemp("cli_models")
    registry = ModelRegistry(folder)
    version = publish_model(registry, trained_model, build_manifest(trained_model, cyclic_dataset))
    registry.set_alias("champion", version.version, reason="test champion", actor="pytest")
    return folder


@pytest.fixture(scope="function")
def users_jsonl(tmp_path: Path) -> Path:
    """Write three users, two of whom have item ids the model does not know."""
    path = tmp_path / "users.jsonl"
    users = [
        {"user_id": "a", "items": [1, 2, 999, 3, 4]},
        {"user_id": "b", "items": ["zzz", 10, 11, 12]},
        {"user_id": "c", "items": [20, 21, 22, 23]},
    ]
    path.write_text("".join(json.dumps(user) + "\n" for user in users))
    return path


def augment_args(users: Path, champion_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """Build the argument list of a tiny ``rsir augment`` call."""
    return [
        "augment", str(users),
        "--checkpoint-dir", str(champion_dir),
        "--output-dir", str(output_dir),
        "--device", "cpu",
        "--m", "2",
        "--p", "1.0",
        "--tau", "30",
        "--min-len", "2",
        *extra,
    ]  # fmt: skip


def test_cli_augment_unknown_ids_exit_2(users_jsonl: Path, champion_dir: Path, tmp_path: Path) -> None:
    output = run_cli(*augment_args(users_jsonl, champion_dir, tmp_path / "out"))

    assert output.status == 2
    assert "999" in output.stderr
    assert "'zzz'" in output.stderr
    assert not (tmp_path / "out" / "augmentations.jsonl").exists()


def test_cli_augment_drop_unknown_writes_files(users_jsonl: Path, champion_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"

    output = run_cli(*augment_args(users_jsonl, champion_dir, out, "--drop-unknown"))
    records = [json.loads(line) for line in (out / "augmentations.jsonl").read_text().splitlines()]
    inter_lines = (out / "augmentations.inter").read_text().splitlines()

    assert output.status == 0, output.stderr
    assert "dropped 2 event(s) with 2 unknown item id(s)" in output.stdout
    assert records, "the trained model should keep some sequences"
    assert {record["user_id"] for record in records} <= {"a", "b", "c"}
    assert all(999 not in record["items"] for record in records)
    assert all("zzz" not in record["items"] for record in records)
    assert inter_lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert len(inter_lines) - 1 == sum(len(record["items"]) for record in records)


def test_cli_augment_inter_output_loads(users_jsonl: Path, champion_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cli(*augment_args(users_jsonl, champion_dir, out, "--drop-unknown"))

    frame = load_interactions(out / "augmentations.inter")

    assert frame["user_id"].str.startswith("aug_").all()


def test_cli_augment_from_csv(write_cyclic_csv, champion_dir: Path, tmp_path: Path) -> None:
    data = write_cyclic_csv("users.csv", num_users=3, num_items=20, length=6)

    output = run_cli(*augment_args(data, champion_dir, tmp_path / "out"))

    assert output.status == 0, output.stderr
    assert "3 users" in output.stdout


def test_cli_augment_bad_jsonl_line(champion_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"user_id": "a", "items": [1, 2]}\n{"items": [3]}\n')

    output = run_cli(*augment_args(path, champion_dir, tmp_path / "out"))

    assert output.status == 2
    assert "bad.jsonl:2" in output.stderr


def test_cli_data_fetch_unknown_name(tmp_path: Path) -> None:
    output = run_cli("data", "fetch", "nope", "--data-dir", str(tmp_path))

    assert output.status == 2
    assert "'nope'" in output.stderr
    assert "ml-100k" in output.stderr
    assert "ml-1m" in output.stderr
    assert list(tmp_path.iterdir()) == []
