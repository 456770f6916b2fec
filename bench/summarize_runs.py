"""Summarise several `rsir run` folders as mean and spread per round, in Markdown.

Usage:
    python bench/summarize_runs.py runs/ml100k-seed0 runs/ml100k-seed1 runs/ml100k-seed2

Each folder must hold the results.json that `rsir run` writes. The spread is
the sample standard deviation over runs (n - 1 in the denominator).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METRICS = ("test_recall@10", "test_ndcg@10", "valid_ndcg@10", "kept", "mean_length", "synthetic_sequences")


def _cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    if mean < 10:
        return f"{mean:.4f} ± {spread:.4f}"
    return f"{mean:.1f} ± {spread:.1f}"


def main(folders: list[str]) -> int:
    """Print per-run tables and the per-round mean and spread over runs."""
    runs = [json.loads((Path(folder) / "results.json").read_text()) for folder in folders]
    print(f"{len(runs)} run(s): {', '.join(run['run_id'] for run in runs)}\n")
    rounds = sorted({row["round"] for run in runs for row in run["table"]})
    header = ["round", "runs", *METRICS, "test_recall@10 change vs round 0 (%)", "test_ndcg@10 change vs round 0 (%)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for round_index in rounds:
        rows = [row for run in runs for row in run["table"] if row["round"] == round_index]
        cells = [str(round_index), str(len(rows))]
        for metric in METRICS:
            cells.append(_cell([float(row[metric]) for row in rows]))
        for metric in ("test_recall@10_change_%", "test_ndcg@10_change_%"):
            values = [float(row[metric]) for row in rows if row[metric] is not None]
            cells.append(f"{statistics.fmean(values):+.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}")
        print("| " + " | ".join(cells) + " |")
    excluded = {row["history_excluded"] for run in runs for row in run["table"]}
    print(f"\nhistory excluded from ranking: {', '.join('yes' if value else 'no' for value in sorted(excluded))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
