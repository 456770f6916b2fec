"""Summarise several `rsir run` folders as mean and spread per round, in Markdown.

Usage:
    python bench/summarize_runs.py runs/ml100k-seed0 runs/ml100k-seed1 runs/ml100k-seed2 \
        [--plot bench/ml100k_seeds_rounds.png]

Each folder must hold the results.json that `rsir run` writes. The spread is
the sample standard deviation over runs (n - 1 in the denominator). With
--plot, it also draws each run and the mean with its spread, per round: test
Recall@10 and NDCG@10 on the left, and on the right the acceptance, as the
share of fidelity checks that passed and the share of started sequences kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

METRICS = (
    "test_recall@10",
    "test_ndcg@10",
    "valid_ndcg@10",
    "step_pass_rate",
    "kept",
    "mean_length",
    "synthetic_sequences",
)


def _mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: list[float]) -> str:
    mean, spread = _mean_spread(values)
    if mean < 10:
        return f"{mean:.4f} ± {spread:.4f}"
    return f"{mean:.1f} ± {spread:.1f}"


def _kept_share(row: dict[str, Any]) -> float:
    return row["kept"] / row["started"] if row["started"] else 0.0


def _plot(runs: list[dict[str, Any]], rounds: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    # Each panel: its axis, its rounds, and two series of (label, value of a table row).
    panels = (
        (left, rounds, (
            ("test Recall@10", lambda row: float(row["test_recall@10"])),
            ("test NDCG@10", lambda row: float(row["test_ndcg@10"])),
        )),
        (right, rounds[1:], (
            ("fidelity checks passed", lambda row: float(row["step_pass_rate"])),
            ("started sequences kept", _kept_share),
        )),
    )
    tables = [{row["round"]: row for row in run["table"]} for run in runs]
    for axis, plotted_rounds, series in panels:
        for color, (label, value) in zip(("#3070b0", "#d07020"), series):
            for table in tables:
                present = [index for index in plotted_rounds if index in table]
                axis.plot(present, [value(table[index]) for index in present], color=color, alpha=0.3, linewidth=1)
            present = [index for index in plotted_rounds if any(index in table for table in tables)]
            summary = [_mean_spread([value(table[index]) for table in tables if index in table]) for index in present]
            axis.errorbar(
                present,
                [mean for mean, _ in summary],
                yerr=[spread for _, spread in summary],
                color=color,
                marker="o",
                capsize=4,
                label=f"{label}, mean ± sd",
            )
        axis.set_xticks(plotted_rounds)
        axis.set_xlabel("round")
        axis.legend(fontsize="small")
    left.set_ylabel("metric")
    left.set_title("test metrics per round (thin lines: single runs)")
    right.set_ylabel("share")
    right.set_title("acceptance per round")
    names = ", ".join(run["run_id"] for run in runs)
    figure.suptitle(f"{runs[0].get('dataset', '')}: {len(runs)} run(s) ({names})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str]) -> int:
    """Print the per-round mean and spread over runs, and optionally plot them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="run folders, each containing a results.json")
    parser.add_argument("--plot", type=Path, help="write a PNG of metrics and acceptance per round here")
    args = parser.parse_args(argv)
    missing = [folder for folder in args.folders if not (Path(folder) / "results.json").is_file()]
    if missing:
        parser.error(f"no results.json in {', '.join(missing)}; pass the folders that `rsir run` wrote")
    runs = [json.loads((Path(folder) / "results.json").read_text()) for folder in args.folders]
    print(f"{len(runs)} run(s): {', '.join(run['run_id'] for run in runs)}\n")
    rounds = sorted({row["round"] for run in runs for row in run["table"]})
    header = ["round", "runs", *METRICS, "test_recall@10 change vs round 0 (%)", "test_ndcg@10 change vs round 0 (%)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for round_index in rounds:
        rows = [row for run in runs for row in run["table"] if row["round"] == round_index]
        cells = [str(round_index), str(len(rows))]
        for metric in METRICS:
            cells.append(_cell([float(row.get(metric, 0.0)) for row in rows]))
        for metric in ("test_recall@10_change_%", "test_ndcg@10_change_%"):
            values = [float(row[metric]) for row in rows if row[metric] is not None]
            mean, spread = _mean_spread(values)
            cells.append(f"{mean:+.2f} ± {spread:.2f}")
        print("| " + " | ".join(cells) + " |")
    excluded = {row["history_excluded"] for run in runs for row in run["table"]}
    print(f"\nhistory excluded from ranking: {', '.join('yes' if value else 'no' for value in sorted(excluded))}")
    if args.plot:
        _plot(runs, rounds, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
