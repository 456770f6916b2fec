"""Write a run's table to the terminal, JSON, CSV and a PNG plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rsir_engine.rounds import RoundResult, RunResult

__all__ = ["format_table", "table_rows", "write_run_reports"]

STOP_REASONS = ("fidelity", "exhausted", "pool_empty", "max_len")


def _change(value: float, base: float) -> float | None:
    return (value - base) / base * 100.0 if base else None


def table_rows(rounds: list[RoundResult]) -> list[dict[str, Any]]:
    """Flatten each round into one table row with changes against round 0 in percent."""
    base = rounds[0] if rounds else None
    rows: list[dict[str, Any]] = []
    for result in rounds:
        stats = result.augmentation or {}
        reasons = stats.get("stop_reasons", {})
        row: dict[str, Any] = {
            "round": result.round,
            "real_sequences": result.real_sequences,
            "synthetic_sequences": result.synthetic_sequences,
            "started": stats.get("started", 0),
            "kept": stats.get("kept", 0),
            "mean_length": round(stats.get("mean_length", 0.0), 2),
            "step_pass_rate": round(stats.get("step_pass_rate", 0.0), 4),
        }
        for reason in STOP_REASONS:
            row[f"stop_{reason}"] = reasons.get(reason, 0)
        row.update(
            {
                "valid_recall@10": round(result.valid.get("recall@10", 0.0), 4),
                "valid_ndcg@10": round(result.valid.get("ndcg@10", 0.0), 4),
                "test_recall@10": round(result.test["recall@10"], 4),
                "test_ndcg@10": round(result.test["ndcg@10"], 4),
                "test_mrr@10": round(result.test["mrr@10"], 4),
            }
        )
        for metric in ("recall@10", "ndcg@10"):
            change = _change(result.test[metric], base.test[metric]) if base else None
            row[f"test_{metric}_change_%"] = round(change, 2) if change is not None else None
        row.update(
            {
                "best_epoch": result.best_epoch,
                "train_seconds": round(result.train_seconds, 1),
                "generation_seconds": round(result.generation_seconds, 1),
                "version": result.version,
                "history_excluded": result.exclude_history,
            }
        )
        rows.append(row)
    return rows


def format_table(rounds: list[RoundResult]) -> str:
    """Format the run table for a terminal."""
    columns = [
        ("round", "round"),
        ("real", "real_sequences"),
        ("synth", "synthetic_sequences"),
        ("started", "started"),
        ("kept", "kept"),
        ("mean_len", "mean_length"),
        ("stops f/e/p/m", None),
        ("val_R@10", "valid_recall@10"),
        ("val_N@10", "valid_ndcg@10"),
        ("test_R@10", "test_recall@10"),
        ("test_N@10", "test_ndcg@10"),
        ("dR@10 %", "test_recall@10_change_%"),
        ("dN@10 %", "test_ndcg@10_change_%"),
        ("version", "version"),
    ]
    rows = table_rows(rounds)
    cells: list[list[str]] = []
    for row in rows:
        line = []
        for _, key in columns:
            if key is None:
                line.append("/".join(str(row[f"stop_{reason}"]) for reason in STOP_REASONS) if row["round"] > 0 else "-")
                continue
            value = row[key]
            if row["round"] == 0 and key in ("started", "kept", "mean_length"):
                line.append("-")
            elif isinstance(value, float) and key.endswith("_%"):
                line.append(f"{value:+.2f}")
            elif isinstance(value, float) and value < 10:
                line.append(f"{value:.4f}")
            elif isinstance(value, float):
                line.append(f"{value:.1f}")
            else:
                line.append("-" if value is None else str(value))
        cells.append(line)
    widths = [max(len(title), *(len(line[i]) for line in cells)) for i, (title, _) in enumerate(columns)]
    header = "  ".join(title.rjust(width) for (title, _), width in zip(columns, widths))
    body = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    excluded = rounds[0].exclude_history if rounds else False
    footer = (
        "stops: fidelity/exhausted/pool_empty/max_len. Metrics: full ranking over the catalogue, "
        f"leave-one-out, history excluded: {'yes' if excluded else 'no'}."
    )
    return "\n".join([header, "-" * len(header), *body, footer])


def write_run_reports(result: RunResult, folder: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv`` and ``metrics.png`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = table_rows(result.rounds)
    paths = {"json": folder / "results.json", "csv": folder / "results.csv", "plot": folder / "metrics.png"}
    payload = {
        "run_id": result.run_id,
        "dataset": result.dataset,
        "device": result.device,
        "seconds": round(result.seconds, 1),
        "config": result.config,
        "table": rows,
        "rounds": [row.to_dict() for row in result.rounds],
    }
    paths["json"].write_text(json.dumps(payload, indent=2), encoding="utf-8")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()) if rows else ["round"])
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, paths["plot"], title=f"{result.dataset}, run {result.run_id}")
    return paths


def _plot(rows: list[dict[str, Any]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [row["round"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (
        ("test_recall@10", "test Recall@10"),
        ("test_ndcg@10", "test NDCG@10"),
        ("valid_ndcg@10", "valid NDCG@10"),
    ):
        left.plot(rounds, [row[key] for row in rows], marker="o", label=label)
    left.set_xlabel("round")
    left.set_ylabel("metric")
    left.set_xticks(rounds)
    left.legend()
    left.set_title("metrics per round")
    later = [row for row in rows if row["round"] > 0]
    if later:
        right.bar([row["round"] for row in later], [row["started"] for row in later], label="started", color="#bbbbbb")
        right.bar([row["round"] for row in later], [row["kept"] for row in later], label="kept", color="#3070b0")
        right.set_xticks([row["round"] for row in later])
    right.set_xlabel("round")
    right.set_ylabel("synthetic sequences")
    right.legend()
    right.set_title("acceptance per round")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
