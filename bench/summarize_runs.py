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
    panels = (
        (left, (("test_recall@10", "test Recall@10"), ("test_ndcg@10", "test NDCG@10")), rounds),
        (right, (("step_pass_rate", "fidelity checks passed"), ("kept share", "started sequences kept")), rounds[1:]),
    )
    for axis, series, plotted_rounds in panels:
        for color, (key, label) in zip(("#3070b0", "#d07020"), series):
            per_run = []
            for run in runs:
                by_round = {row["round"]: row for row in run["table"]}
                points = [
                    (index, _kept_share(by_round[index]) if key == "kept share" else float(by_round[index][key]))
                    for index in plotted_rounds
                    if index in by_round
                ]
                per_run.append(points)
                axis.plot([x for x, _ in points], [y for _, y in points], color=color, alpha=0.3, linewidth=1)
            means, spreads, xs = [], [], []
            for index in plotted_rounds:
                values = [y for points in per_run for x, y in points if x == index]
                if values:
                    mean, spread = _mean_spread(values)
                    xs.append(index)
                    means.append(mean)
                    spreads.append(spread)
            axis.errorbar(xs, means, yerr=spreads, color=color, marker="o", capsize=4, label=f"{label}, mean ± sd")
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
