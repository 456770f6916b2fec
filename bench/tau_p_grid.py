"""One self-improvement round per (tau, p) cell from a shared round-0 model, plus a run without the check.

Usage:
    .venv/bin/python bench/tau_p_grid.py --dataset ml-100k --m 2

The script trains round 0 once, as ``rsir run`` does (same seeds, same settings).
Then, for every cell of ``--taus`` by ``--ps``, it generates from that model and
keeps what passes and is new. It trains a successor from scratch on the real plus
kept sequences and tests it. A last cell generates with tau 20 and p 0.5 but with the
fidelity stop switched off (``GenerationConfig(fidelity=False)``, the CLI's
``--no-fidelity``), so sequences only stop at max_len or an empty pool. Its step
records still contain each step's rank, so the script counts the steps the check
would have failed. Each cell uses round 1's seeds of ``rsir run`` (training seed + 1,
generation seed + 1), so the tau 20, p 0.5 cell is ``rsir run``'s round 1 with the
same m.

It prints a Markdown block for bench/RESULTS.md and writes the rows (JSON) and a
plot of test NDCG@10 change and acceptance per cell (PNG) to ``--output-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from machine import cpu_model, load_average
from rsir_engine.architectures import build_model
from rsir_engine.architectures.sasrec import SASRecConfig
from rsir_engine.augmentation import select_augmentations
from rsir_engine.datasets import open_dataset
from rsir_engine.generation import GenerationConfig, generate
from rsir_engine.training import TrainConfig, evaluate_test, fit


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--data-dir", default=os.environ.get("RSIR_DATA_DIR", "data"), help="folder of named datasets")
    parser.add_argument("--taus", default="5,10,20", help="comma-separated tau values (default 5,10,20)")
    parser.add_argument("--ps", default="0.3,0.5,0.7", help="comma-separated p values (default 0.3,0.5,0.7)")
    parser.add_argument("--m", type=int, default=5, help="sequences started per real user (default 5)")
    parser.add_argument("--epochs", type=int, default=200, help="maximum epochs per model (default 200)")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="training and generation seed of round 0 (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--output-dir", default="runs/bench/grid", help="JSON and PNG (default runs/bench/grid)")
    return parser.parse_args(argv)


def train_and_test(sequences, split, num_items: int, seed: int, args: argparse.Namespace):
    """Train a fresh SASRec as ``rsir run`` does for a round with this seed.

    Returns:
        The model, its fit result and its test result.
    """
    torch.manual_seed(seed)
    model = build_model("sasrec", SASRecConfig(num_items=num_items))
    config = TrainConfig(max_epochs=args.epochs, patience=args.patience, seed=seed)
    result = fit(model, sequences, split, config)
    return model, result, evaluate_test(model, split)


def run_cell(parent, split, num_items: int, args: argparse.Namespace, tau: int, p: float, fidelity: bool) -> dict:
    """Generate from parent with (tau, p), keep what passes, then train and test the successor."""
    started = time.perf_counter()
    config = GenerationConfig(m=args.m, tau=tau, p=p, fidelity=fidelity, seed=args.seed + 1)
    seeds = [seq for seq in split.train if seq]
    generated = generate(parent, seeds, config)
    kept, stats = select_augmentations(generated, min_len=config.min_len, existing=split.train)
    generation_seconds = time.perf_counter() - started
    # Count appended items whose check ranked the user's best unused item below 20.
    # Ranks are recorded with or without the stop.
    steps = [step for seq in kept for step in seq.steps if step.item is not None and step.best_rank > 0]
    outside_20 = sum(step.best_rank > 20 for step in steps)
    _, result, tested = train_and_test([*split.train, *(seq.items for seq in kept)], split, num_items, args.seed + 1, args)
    return {
        "tau": tau,
        "p": p,
        "fidelity": fidelity,
        "started": stats.started,
        "kept": stats.kept,
        "acceptance": stats.acceptance_rate,
        "mean_length": stats.mean_length,
        "stop_reasons": stats.stop_reasons,
        "kept_steps": len(steps),
        "kept_steps_rank_over_20": outside_20,
        "generation_seconds": generation_seconds,
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
        "valid": result.best_valid,
        "test": tested.metrics,
    }


def plot(base: dict, cells: list[dict], taus: list[int], ps: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [cell for cell in cells if cell["fidelity"]]
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for ax, key, title in ((axes[0], "change", "test NDCG@10 change vs round 0 (%)"), (axes[1], "acceptance", "kept / started")):
        values = [[0.0] * len(ps) for _ in taus]
        for cell in grid:
            value = cell["acceptance"]
            if key == "change":
                value = 100 * (cell["test"]["ndcg@10"] / base["test"]["ndcg@10"] - 1)
            values[taus.index(cell["tau"])][ps.index(cell["p"])] = value
        image = ax.imshow(values, cmap="RdYlGn" if key == "change" else "Blues", aspect="auto")
        ax.set_xticks(range(len(ps)), [str(p) for p in ps])
        ax.set_yticks(range(len(taus)), [str(t) for t in taus])
        ax.set_xlabel("p")
        ax.set_ylabel("tau")
        ax.set_title(title, fontsize=10)
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:+.1f}" if key == "change" else f"{value:.2f}", ha="center", va="center", fontsize=9)
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    taus = [int(value) for value in args.taus.split(",")]
    ps = [float(value) for value in args.ps.split(",")]
    output = Path(args.output_dir) / args.dataset
    output.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "bench/tau_p_grid.py", *(argv if argv is not None else sys.argv[1:])])
    started = time.perf_counter()

    dataset = open_dataset(args.dataset, args.data_dir)
    split = dataset.split()
    parent, base_fit, base_test = train_and_test(split.train, split, dataset.num_items, args.seed, args)
    base = {"best_epoch": base_fit.best_epoch, "valid": base_fit.best_valid, "test": base_test.metrics,
            "train_seconds": base_fit.seconds}
    print(f"round 0: test {base_test.summary()}", file=sys.stderr)
    cells = []
    for tau in taus:
        for p in ps:
            cells.append(run_cell(parent, split, dataset.num_items, args, tau, p, fidelity=True))
            print(f"tau {tau} p {p}: {json.dumps(cells[-1]['test'])}", file=sys.stderr)
            (output / "grid.json").write_text(json.dumps({"base": base, "cells": cells}, indent=1))
    cells.append(run_cell(parent, split, dataset.num_items, args, 20, 0.5, fidelity=False))
    (output / "grid.json").write_text(json.dumps({"base": base, "cells": cells}, indent=1))
    png = output / f"grid_{args.dataset.replace('-', '')}.png"
    plot(base, cells, taus, ps, png)

    print(f"```\n{command}\n```\n")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; "
          f"wall time {time.perf_counter() - started:.0f} s")
    print(f"- data: {args.dataset}, {dataset.num_users} users, leave-one-out by time, full ranking, history not excluded")
    print(f"- settings: SASRec as `rsir run` (hidden 64, 2 layers, 2 heads, max length 50, dropout 0.2, batch 128, "
          f"at most {args.epochs} epochs, patience {args.patience}); m={args.m}, greedy, min_len 3; "
          f"round 0 seed {args.seed}, each cell trained with seed {args.seed + 1} and generated with seed {args.seed + 1}")
    print(f"- hardware: {os.cpu_count()} CPUs (nproc), {cpu_model()}, Python {platform.python_version()}, "
          f"torch {torch.__version__}, {args.threads} thread(s); load average at the end {load_average()}")
    print()
    print(f"Round 0: test Recall@10 {base['test']['recall@10']:.4f}, NDCG@10 {base['test']['ndcg@10']:.4f}, "
          f"valid NDCG@10 {base['valid']['ndcg@10']:.4f}, best epoch {base['best_epoch']}")
    print()
    print("| tau | p | fidelity | kept / started | mean length | stops f/e/p/m | appended items ranked over 20 "
          "| valid N@10 | test R@10 | test N@10 | dR@10 % | dN@10 % |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for cell in cells:
        stops = cell["stop_reasons"]
        stop_text = "/".join(str(stops.get(key, 0)) for key in ("fidelity", "exhausted", "pool_empty", "max_len"))
        d_recall = 100 * (cell["test"]["recall@10"] / base["test"]["recall@10"] - 1)
        d_ndcg = 100 * (cell["test"]["ndcg@10"] / base["test"]["ndcg@10"] - 1)
        share = cell["kept_steps_rank_over_20"] / cell["kept_steps"] if cell["kept_steps"] else 0.0
        print(f"| {cell['tau']} | {cell['p']} | {'on' if cell['fidelity'] else 'off'} | {cell['kept']} / {cell['started']} "
              f"| {cell['mean_length']:.1f} | {stop_text} | {cell['kept_steps_rank_over_20']} of {cell['kept_steps']} "
              f"({100 * share:.1f}%) | {cell['valid']['ndcg@10']:.4f} | {cell['test']['recall@10']:.4f} "
              f"| {cell['test']['ndcg@10']:.4f} | {d_recall:+.2f} | {d_ndcg:+.2f} |")
    print(f"\nPlot: [{png.name}]({png.name}) (copied from {png})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
