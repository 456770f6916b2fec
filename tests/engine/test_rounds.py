"""Tests for the round loop end to end on tiny data: publishing, records, resume, cancel, no leaks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

import rsir_engine.rounds as rounds_module
from rsir_engine.data import SequenceDataset, build_dataset
from rsir_engine.errors import ConfigError, RoundCancelled
from rsir_engine.generation import GeneratedSequence, GenerationConfig
from rsir_engine.registry import ModelRegistry
from rsir_engine.rounds import RoundConfig, RunResult, run_rounds


def round_config(tiny_configs, **generation: object) -> RoundConfig:
    """Return a one-round config with a tiny model, two epochs and CPU only."""
    return RoundConfig(
        rounds=1,
        model=tiny_configs.model(1),
        generation=GenerationConfig(m=2, **generation),
        train=tiny_configs.train(max_epochs=2, patience=1),
        device="cpu",
    )


@dataclass
class RoundRun:
    """One finished run with everything a test reads from it."""

    result: RunResult
    registry: ModelRegistry
    run_dir: Path
    dataset: SequenceDataset
    config: RoundConfig
    progress: list[tuple[str, int, float]] = field(default_factory=list)


@pytest.fixture(scope="module")
def round_run(cyclic_dataset: SequenceDataset, tiny_configs, tmp_path_factory: pytest.TempPathFactory) -> RoundRun:
    """Run round 0 and one self-improvement round on the cyclic data with a registry and run folder."""
    root = tmp_path_factory.mktemp("rounds")
    registry = ModelRegistry(root / "models")
    config = round_config(tiny_configs)
    progress: list[tuple[str, int, float]] = []
    result = run_rounds(
        cyclic_dataset,
        config,
        registry=registry,
        run_dir=root / "run",
        run_id="tiny",
        on_progress=lambda stage, index, done: progress.append((stage, index, done)),
    )
    return RoundRun(result, registry, root / "run", cyclic_dataset, config, progress)


def test_run_rounds_publishes_two_versions(round_run: RoundRun) -> None:
    assert [entry.version for entry in round_run.registry.list_versions()] == [1, 2]
    assert [row.version for row in round_run.result.rounds] == [1, 2]


def test_run_rounds_links_parent(round_run: RoundRun) -> None:
    base = round_run.registry.get(1)
    successor = round_run.registry.get(2)

    assert base.parent_version is None
    assert successor.parent_version == 1
    assert base.round == 0
    assert successor.round == 1
    assert successor.manifest["publish_key"] == "tiny:round1"
    assert [entry.version for entry in round_run.registry.lineage(2)] == [2, 1]


def test_run_rounds_manifest_records_rsir_params(round_run: RoundRun) -> None:
    successor = round_run.registry.get(2)

    assert successor.manifest["rsir_params"]["m"] == 2
    assert successor.manifest["rsir_params"]["tau"] == 20
    assert successor.manifest["metrics"]["test"] == round_run.result.rounds[1].test


def test_run_rounds_rows_augmentation_stats(round_run: RoundRun) -> None:
    base, successor = round_run.result.rounds
    stats = successor.augmentation

    assert base.augmentation is None
    assert base.synthetic_sequences == 0
    assert stats is not None
    assert stats["started"] == 2 * round_run.dataset.num_users
    assert stats["kept"] == successor.synthetic_sequences
    assert stats["kept"] == len(round_run.result.synthetic[1])
    assert sum(stats["stop_reasons"].values()) == stats["started"]
    dropped = stats["dropped_short"] + stats["duplicates"] + stats["copies_of_existing"]
    assert stats["kept"] + dropped == stats["started"]


def test_run_rounds_rows_metrics(round_run: RoundRun) -> None:
    for row in round_run.result.rounds:
        assert row.real_sequences == round_run.dataset.num_users
        assert set(row.test) >= {"recall@10", "ndcg@10", "mrr@10"}
        assert 1 <= row.best_epoch <= row.epochs_run <= 2
        assert row.exclude_history is False


def test_run_rounds_writes_synthetic_jsonl(round_run: RoundRun) -> None:
    path = round_run.run_dir / "round_1" / "synthetic.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]

    assert len(records) == len(round_run.result.synthetic[1])
    assert [record["items"] for record in records] == [seq.items for seq in round_run.result.synthetic[1]]
    assert all(set(record) == {"seed_index", "items", "stop_reason", "steps"} for record in records)
    assert (round_run.run_dir / "round_0" / "synthetic.jsonl").read_text() == ""


def test_run_rounds_writes_row_json(round_run: RoundRun) -> None:
    for row in round_run.result.rounds:
        saved = json.loads((round_run.run_dir / f"round_{row.round}" / "row.json").read_text())

        assert saved == row.to_dict()


def test_run_rounds_progress_reaches_one(round_run: RoundRun) -> None:
    fractions = [done for _, _, done in round_run.progress]

    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert {stage for stage, _, _ in round_run.progress} >= {"training", "generating", "evaluating", "published"}


def test_run_rounds_resume_publishes_nothing(round_run: RoundRun) -> None:
    again = run_rounds(
        round_run.dataset, round_run.config, registry=round_run.registry, run_dir=round_run.run_dir, run_id="tiny"
    )

    assert len(round_run.registry.list_versions()) == 2
    assert again.rounds == round_run.result.rounds
    assert [seq.items for seq in again.synthetic[1]] == [seq.items for seq in round_run.result.synthetic[1]]


def test_run_rounds_cancelled_at_start(cyclic_dataset: SequenceDataset, tiny_configs, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")

    with pytest.raises(RoundCancelled, match="round 0"):
        run_rounds(
            cyclic_dataset, round_config(tiny_configs), registry=registry, run_id="stop", should_stop=lambda: True
        )

    assert registry.list_versions() == []


def test_run_rounds_cancel_then_resume(
    round_run: RoundRun, cyclic_dataset: SequenceDataset, tiny_configs, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    config = round_config(tiny_configs)
    finished: list[int] = []
    settings = {"registry": registry, "run_dir": tmp_path / "run", "run_id": "resumable"}

    with pytest.raises(RoundCancelled, match="round 1"):
        run_rounds(
            cyclic_dataset,
            config,
            on_round=lambda row: finished.append(row.round),
            should_stop=lambda: bool(finished),
            **settings,
        )
    after_cancel = [entry.version for entry in registry.list_versions()]
    resumed = run_rounds(cyclic_dataset, config, **settings)

    assert after_cancel == [1]
    assert [row.version for row in resumed.rounds] == [1, 2]
    assert registry.get(2).parent_version == 1
    # Training and generation are seeded, so the interruption changes nothing.
    expected = round_run.result.synthetic[1]
    assert [seq.items for seq in resumed.synthetic[1]] == [seq.items for seq in expected]
    assert resumed.rounds[1].test == round_run.result.rounds[1].test


@pytest.mark.parametrize("changes", [{"rounds": -1}, {"seed_from": "pseudo"}])
def test_round_config_rejects_bad_values(changes: dict) -> None:
    with pytest.raises(ConfigError):
        RoundConfig(**changes)


# The generator must never see a user's validation or test item. Here those
# items exist nowhere else, so any of them in a seed history is a leak.

HOLDOUT_USERS = 16


@dataclass
class LeakRun:
    """A run whose generate calls were recorded."""

    seed_histories: list[list[list[int]]]
    generated: list[list[GeneratedSequence]]
    holdout: set[int]
    result: RunResult


@pytest.fixture(scope="module")
def leak_run(tiny_configs) -> LeakRun:
    """Run one round with p = 1 on data whose last two items per user are unique, recording generate calls."""
    rows = []
    for user in range(HOLDOUT_USERS):
        shared = [(user + step) % 20 + 1 for step in range(6)]
        items: list[int | str] = [*shared, f"valid-{user}", f"test-{user}"]
        rows.extend((f"u{user}", item, 1_700_000_000 + 60 * step) for step, item in enumerate(items))
    dataset = build_dataset(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), name="holdout")
    split = dataset.split()
    holdout = {int(item) for item in split.valid_targets} | {int(item) for item in split.test_targets}

    seed_histories: list[list[list[int]]] = []
    generated: list[list[GeneratedSequence]] = []
    real_generate = rounds_module.generate

    def recording_generate(model, histories: Sequence[Sequence[int]], config, **kwargs):
        seed_histories.append([list(history) for history in histories])
        output = real_generate(model, histories, config, **kwargs)
        generated.append(output)
        return output

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rounds_module, "generate", recording_generate)
        result = run_rounds(dataset, round_config(tiny_configs, p=1.0, tau=dataset.num_items))
    return LeakRun(seed_histories, generated, holdout, result)


def test_run_rounds_holdout_items_are_unique(leak_run: LeakRun) -> None:
    assert len(leak_run.holdout) == 2 * HOLDOUT_USERS


def test_run_rounds_generator_never_sees_holdout(leak_run: LeakRun) -> None:
    assert len(leak_run.seed_histories) == 1
    assert len(leak_run.seed_histories[0]) == HOLDOUT_USERS
    for history in leak_run.seed_histories[0]:
        assert not set(history) & leak_run.holdout, f"seed history {history} contains held-out items"


def test_run_rounds_own_pool_generates_no_holdout(leak_run: LeakRun) -> None:
    for sequence in leak_run.generated[0]:
        assert not set(sequence.items) & leak_run.holdout, f"generated {sequence.items} contains held-out items"


def test_run_rounds_kept_sequences_no_holdout(leak_run: LeakRun) -> None:
    kept = leak_run.result.synthetic[1]

    assert kept, "p = 1 with a loose tau should keep some sequences"
    assert all(not set(sequence.items) & leak_run.holdout for sequence in kept)
