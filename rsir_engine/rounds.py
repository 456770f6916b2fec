"""The recursive self-improvement loop: train, generate, filter, merge, retrain.

Round 0 trains a base model on the real users' training sequences. In every
later round the previous round's model generates synthetic sequences from seed
users. Those that pass the fidelity check and are new join the data as
pseudo-users, and a successor is trained on the enlarged data, from scratch or,
when asked, from the parent's weights. Every model is selected by
validation NDCG@10 on real users and tested once on real users' test items.

When a run folder is given, each finished round leaves its synthetic sequences
and its result row there, and each model is published with the key
``<run_id>:round<r>``. A later call with the same run id and folder resumes
after the last finished round instead of repeating it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rsir_engine.architectures import SASRecConfig, build_model
from rsir_engine.augmentation import AugmentationStats, select_augmentations
from rsir_engine.data import SequenceDataset
from rsir_engine.device import resolve_device
from rsir_engine.errors import ConfigError, RoundCancelled
from rsir_engine.fidelity import StepRecord, StopReason
from rsir_engine.generation import GeneratedSequence, GenerationConfig, generate
from rsir_engine.model_io import build_manifest, load_version, publish_model
from rsir_engine.registry import ModelRegistry
from rsir_engine.training import TrainConfig, evaluate_test, fit

__all__ = ["ProgressCallback", "RoundConfig", "RoundResult", "RunResult", "run_rounds"]

logger = logging.getLogger(__name__)

# (stage, round index, fraction of the whole run done in [0, 1])
ProgressCallback = Callable[[str, int, float], None]

SEED_FROM_CHOICES = ("real", "all")


@dataclass(frozen=True)
class RoundConfig:
    """Everything a run of self-improvement rounds needs besides the data."""

    rounds: int = 3  # self-improvement rounds after the base model (round 0)
    architecture: str = "sasrec"
    model: SASRecConfig = field(default_factory=lambda: SASRecConfig(num_items=1))  # num_items is set from the data
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    warm_start: bool = False  # start each successor from its parent's weights instead of from scratch
    seed_from: str = "real"  # "real": real users seed generation; "all": every sequence, pseudo-users too
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ConfigError(f"rounds must be 0 or more, got {self.rounds}")
        if self.seed_from not in SEED_FROM_CHOICES:
            raise ConfigError(f"seed_from must be one of {', '.join(SEED_FROM_CHOICES)}, got {self.seed_from!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict (model size without num_items)."""
        model = self.model.to_dict()
        model.pop("num_items", None)
        return {
            "rounds": self.rounds,
            "architecture": self.architecture,
            "model": model,
            "generation": self.generation.to_dict(),
            "train": self.train.to_dict(),
            "warm_start": self.warm_start,
            "seed_from": self.seed_from,
            "device": self.device,
        }


@dataclass
class RoundResult:
    """One row of the run table."""

    round: int
    real_sequences: int
    synthetic_sequences: int  # pseudo-users in this round's training data
    augmentation: dict[str, Any] | None  # AugmentationStats.to_dict(), None for round 0
    valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs_run: int
    train_seconds: float
    generation_seconds: float
    version: int | None
    exclude_history: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the row as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    """All rounds of one run and the synthetic sequences each round kept."""

    run_id: str
    dataset: str
    config: dict[str, Any]
    rounds: list[RoundResult]
    synthetic: dict[int, list[GeneratedSequence]]  # round -> sequences kept in that round
    device: str
    seconds: float


def _round_dir(run_dir: Path, round_index: int) -> Path:
    return run_dir / f"round_{round_index}"


def _save_round(run_dir: Path, row: RoundResult, kept: list[GeneratedSequence]) -> None:
    """Write the round's synthetic sequences and row; the row file marks the round finished."""
    folder = _round_dir(run_dir, row.round)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "synthetic.jsonl.tmp", "w", encoding="utf-8") as handle:
        for seq in kept:
            handle.write(
                json.dumps(
                    {
                        "seed_index": seq.seed_index,
                        "items": seq.items,
                        "stop_reason": seq.stop_reason.value,
                        "steps": [step.to_dict() for step in seq.steps],
                    }
                )
                + "\n"
            )
    (folder / "synthetic.jsonl.tmp").replace(folder / "synthetic.jsonl")
    (folder / "row.json.tmp").write_text(json.dumps(row.to_dict(), indent=2), encoding="utf-8")
    (folder / "row.json.tmp").replace(folder / "row.json")


def _load_round(run_dir: Path, round_index: int) -> tuple[RoundResult, list[GeneratedSequence]] | None:
    """Read a finished round back, or return None when it did not finish."""
    folder = _round_dir(run_dir, round_index)
    if not (folder / "row.json").exists():
        return None
    row = RoundResult(**json.loads((folder / "row.json").read_text(encoding="utf-8")))
    kept: list[GeneratedSequence] = []
    with open(folder / "synthetic.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            kept.append(
                GeneratedSequence(
                    seed_index=record["seed_index"],
                    items=record["items"],
                    steps=[StepRecord(**step) for step in record["steps"]],
                    stop_reason=StopReason(record["stop_reason"]),
                )
            )
    return row, kept


def run_rounds(
    dataset: SequenceDataset,
    config: RoundConfig,
    *,
    registry: ModelRegistry | None = None,
    run_dir: str | Path | None = None,
    run_id: str | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
) -> RunResult:
    """Run round 0 and ``config.rounds`` self-improvement rounds on ``dataset``.

    Args:
        dataset: real users' sequences; split leave-one-out here.
        config: model, generation, training and loop settings.
        registry: where each round's model is published; none when omitted.
        run_dir: folder for per-round synthetic data and rows, enabling resume.
        run_id: identifies the run in logs, manifests and publish keys.
        on_progress: called with (stage, round, fraction done) at each stage.
        should_stop: polled at safe points; when true the run raises ``RoundCancelled``.
        on_round: called with each finished round's row.

    Returns:
        The table rows and the synthetic sequences kept in each round.

    Raises:
        RoundCancelled: ``should_stop`` returned true; finished rounds stay saved.
    """
    started = time.perf_counter()
    run_id = run_id or uuid.uuid4().hex[:12]
    run_path = Path(run_dir) if run_dir is not None else None
    device = resolve_device(config.device)
    split = dataset.split()
    model_config = dataclasses.replace(config.model, num_items=dataset.num_items)
    total_rounds = config.rounds + 1
    prefix = f"run {run_id}: "
    logger.info(
        "%sstarting %d round(s) on %s (%d users, %d items) on %s",
        prefix,
        config.rounds,
        dataset.name,
        dataset.num_users,
        dataset.num_items,
        device,
    )

    def progress(stage: str, round_index: int, within: float) -> None:
        if on_progress is not None:
            on_progress(stage, round_index, min(1.0, (round_index + within) / total_rounds))

    def check_stop(round_index: int) -> None:
        if should_stop is not None and should_stop():
            raise RoundCancelled(f"run {run_id} was cancelled during round {round_index}")

    pseudo: list[list[int]] = []
    rows: list[RoundResult] = []
    synthetic: dict[int, list[GeneratedSequence]] = {}
    parent: nn.Module | None = None
    parent_version: int | None = None

    for round_index in range(total_rounds):
        round_prefix = f"{prefix}round {round_index}: "
        check_stop(round_index)

        # 1. Resume a round that an earlier attempt finished and published.
        resumed = _load_round(run_path, round_index) if run_path is not None else None
        publish_key = f"{run_id}:round{round_index}"
        if resumed is not None and registry is not None and registry.find_by_publish_key(publish_key) is not None:
            row, kept = resumed
            pseudo.extend(list(seq.items) for seq in kept)
            synthetic[round_index] = kept
            loaded = load_version(registry, row.version, device=device)
            parent, parent_version = loaded.model, row.version
            rows.append(row)
            logger.info("%sresumed from %s (version %s)", round_prefix, _round_dir(run_path, round_index), row.version)
            progress("resumed", round_index, 1.0)
            continue

        # 2. Generate from the parent and keep what passes and is new.
        stats: AugmentationStats | None = None
        kept: list[GeneratedSequence] = []
        generation_seconds = 0.0
        if round_index > 0:
            assert parent is not None
            progress("generating", round_index, 0.0)
            seeds = [seq for seq in split.train if seq]
            if config.seed_from == "all":
                seeds = seeds + pseudo
            gen_config = dataclasses.replace(config.generation, seed=config.generation.seed + round_index)
            gen_started = time.perf_counter()
            generated = generate(parent, seeds, gen_config, should_stop=should_stop)
            check_stop(round_index)
            kept, stats = select_augmentations(
                generated, min_len=gen_config.min_len, existing=[*split.train, *pseudo]
            )
            generation_seconds = time.perf_counter() - gen_started
            pseudo.extend(list(seq.items) for seq in kept)
            logger.info(
                "%sgenerated %d sequences from %d seeds in %.1f s, kept %d (mean length %.1f), stops %s",
                round_prefix,
                stats.started,
                len(seeds),
                generation_seconds,
                stats.kept,
                stats.mean_length,
                stats.stop_reasons,
            )
        synthetic[round_index] = kept

        # 3. Train the model of this round on real plus pseudo-user sequences.
        progress("training", round_index, 0.1 if round_index > 0 else 0.0)
        torch.manual_seed(config.train.seed + round_index)
        model = build_model(config.architecture, model_config).to(device)
        if config.warm_start and parent is not None:
            model.load_state_dict(parent.state_dict())
        train_config = dataclasses.replace(config.train, seed=config.train.seed + round_index)
        result = fit(model, [*split.train, *pseudo], split, train_config, log_prefix=round_prefix, should_stop=should_stop)
        check_stop(round_index)

        # 4. Test once, publish, record.
        progress("evaluating", round_index, 0.9)
        tested = evaluate_test(model, split, exclude_history=config.train.exclude_history)
        logger.info("%stest %s", round_prefix, tested.summary())
        version: int | None = None
        if registry is not None:
            manifest = build_manifest(
                model,
                dataset,
                parent_version=parent_version,
                round_index=round_index,
                rsir_params=config.generation.to_dict() if round_index > 0 else {},
                train_params=train_config.to_dict(),
                metrics={"valid": result.best_valid, "test": tested.metrics, "exclude_history": tested.exclude_history},
                run_id=run_id,
            )
            version = publish_model(registry, model, manifest, publish_key=publish_key).version
        row = RoundResult(
            round=round_index,
            real_sequences=len(split.train),
            synthetic_sequences=len(pseudo),
            augmentation=stats.to_dict() if stats is not None else None,
            valid=result.best_valid,
            test=tested.metrics,
            best_epoch=result.best_epoch,
            epochs_run=result.epochs_run,
            train_seconds=result.seconds,
            generation_seconds=generation_seconds,
            version=version,
            exclude_history=tested.exclude_history,
        )
        if run_path is not None:
            _save_round(run_path, row, kept)
        rows.append(row)
        if on_round is not None:
            on_round(row)
        progress("published", round_index, 1.0)
        parent, parent_version = model, version

    return RunResult(
        run_id=run_id,
        dataset=dataset.name,
        config=config.to_dict(),
        rounds=rows,
        synthetic=synthetic,
        device=str(device),
        seconds=time.perf_counter() - started,
    )

