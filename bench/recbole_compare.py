"""Train this project's SASRec and RecBole 1.2.1's on the same split and compare them.

Usage:
    .venv/bin/python bench/recbole_compare.py --dataset ml-100k
    .venv/bin/python bench/recbole_compare.py --dataset ml-1m --epochs 5 --shipped-epochs 1

For one dataset the script:

1. creates RecBole's own virtual environment (``--recbole-venv``, default
   ``bench/.venv-recbole``) on first use: torch 2.13.0, RecBole 1.2.1 without its
   ``ray`` requirement, and RecBole's other requirements;
2. writes the dataset as a RecBole atomic file whose timestamp column is each
   event's rank within its user, in this project's order (exact 64-bit timestamps,
   ties in file order), so RecBole's float32 timestamps cannot reorder events;
3. trains both sides with the same settings, one after the other unless
   ``--jobs`` allows more at once. Ours runs first, then RecBole with autograd
   anomaly detection off, then RecBole as shipped for ``--shipped-epochs``
   epochs to time it. As shipped means with anomaly detection on, because
   importing ``recbole.model.sequential_recommender`` switches it on for the
   whole process;
4. checks that both sides held out the same validation and test item for every
   user, then prints a Markdown block for bench/RESULTS.md and writes the raw
   results (JSON) and a plot of validation NDCG@10 against wall time (PNG) to
   ``--output-dir``.

Both sides use hidden 64, feed-forward 256, 2 layers, 2 heads, max length 50,
dropout 0.2 (RecBole: hidden and attention dropout), GELU, Adam at 0.001, batch
128 and full softmax cross-entropy. Both stop early on validation NDCG@10 with
patience 10 and rank the full catalogue without excluding history, because
RecBole's full ranking of sequential models passes no history to exclude. Each
side gets one torch thread by default.
They differ in what one training example is: RecBole trains on every prefix of
every sequence, ours on one window per sequence (overlapping windows for long
ones) with a loss at every position.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from machine import cpu_model, load_average

BENCH_DIR = Path(__file__).resolve().parent
# RecBole's requirements, without ray: only recbole.quick_start imports it.
RECBOLE_REQUIREMENTS = [
    "torch==2.13.0",
    "numpy",
    "scipy",
    "pandas",
    "tqdm",
    "colorlog==4.7.2",
    "colorama==0.4.4",
    "scikit-learn",
    "pyyaml",
    "tensorboard",
    "thop",
    "tabulate",
    "plotly",
    "texttable",
    "psutil",
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--data-dir", default=os.environ.get("RSIR_DATA_DIR", "data"), help="folder of named datasets")
    parser.add_argument("--epochs", type=int, default=200, help="epoch budget of both sides (default 200)")
    parser.add_argument("--ours-epochs", type=int, default=None,
                        help="epoch budget of an extra run of ours (at --ours-batch-size when given), e.g. to convergence")
    parser.add_argument("--ours-batch-size", type=int, default=None,
                        help="windows per step of an extra run of ours (ours and RecBole use 128 otherwise)")
    parser.add_argument("--shipped-epochs", type=int, default=2,
                        help="epochs of RecBole as shipped, to time it; 0 skips it (default 2)")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of each side (default 1)")
    parser.add_argument("--recbole-venv", default=str(BENCH_DIR / ".venv-recbole"))
    parser.add_argument("--output-dir", default="runs/bench/recbole", help="JSON, PNG and work files (default runs/bench/recbole)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="sides to run at once, in plan order (default 1). Keep jobs times threads "
                             "at most the number of cores, so each side keeps its own core")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the results of sides already run in --output-dir and run only the missing ones")
    parser.add_argument("--side", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--side-output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for option in ("jobs", "threads"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1, got {getattr(args, option)}")
    return args


# --------------------------------------------------------------------------- ours


def run_ours(args: argparse.Namespace) -> None:
    """Train and test our SASRec in a child process, so that its peak memory is its own."""
    import torch

    from rsir_engine.architectures import build_model
    from rsir_engine.architectures.sasrec import SASRecConfig
    from rsir_engine.datasets import open_dataset
    from rsir_engine.training import TrainConfig, evaluate_test, fit, seed_everything

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    dataset = open_dataset(args.dataset, args.data_dir)
    split = dataset.split()
    seed_everything(args.seed)
    model = build_model("sasrec", SASRecConfig(num_items=dataset.num_items, max_len=50, hidden_size=64,
                                               num_layers=2, num_heads=2, dropout=0.2, inner_size=256))
    config = TrainConfig(max_epochs=args.epochs, batch_size=args.ours_batch_size or 128, learning_rate=1e-3,
                         patience=args.patience, seed=args.seed)
    result = fit(model, split.train, split, config)
    tested = evaluate_test(model, split)
    raw_users = [str(user) for user in dataset.user_ids]
    to_raw = dataset.item_map.to_raw
    test_rows, valid_rows = {}, {}
    for position, user in enumerate(split.eval_users):
        test_rows[raw_users[user]] = {"item": str(to_raw([int(split.test_targets[user])])[0]), "rank": int(tested.ranks[position])}
        valid_rows[raw_users[user]] = {"item": str(to_raw([int(split.valid_targets[user])])[0])}
    elapsed = 0.0
    epochs = []
    for row in result.history:
        elapsed += row["train_seconds"] + row.get("valid_seconds", 0.0)
        epochs.append({"epoch": int(row["epoch"]), "train_seconds": row["train_seconds"], "loss": row["loss"],
                       "valid_seconds": row.get("valid_seconds"), "valid_ndcg@10": row.get("valid_ndcg@10"),
                       "elapsed_seconds": elapsed})
    output = {
        "side": "ours",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "best_valid_ndcg@10": result.best_valid["ndcg@10"],
        "fit_seconds": result.seconds,
        "wall_seconds": time.perf_counter() - started,
        "test": test_rows,
        "valid": valid_rows,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    Path(args.side_output).write_text(json.dumps(output))


# ------------------------------------------------------------------------ recbole


def ensure_recbole_venv(venv: Path) -> Path:
    """Create RecBole's environment on first use and return the path of its Python."""
    python = venv / "bin" / "python"
    marker = venv / "rsir-bench-ready"
    if marker.exists():
        return python
    print(f"creating RecBole's environment in {venv} (a few minutes)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "--no-deps", "recbole==1.2.1"], check=True)
    subprocess.run([*pip, *RECBOLE_REQUIREMENTS], check=True)
    marker.write_text("recbole==1.2.1 without ray\n")
    return python


def write_atomic_file(args: argparse.Namespace, work: Path) -> tuple[Path, str, int, int]:
    """Write <work>/<name>/<name>.inter with each event's per-user rank as its timestamp."""
    from rsir_engine.datasets import open_dataset

    dataset = open_dataset(args.dataset, args.data_dir)
    name = args.dataset.replace("-", "")
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    to_raw = dataset.item_map.to_raw
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user, sequence in zip(dataset.user_ids, dataset.sequences):
        for rank, item in enumerate(to_raw(sequence)):
            lines.append(f"{user}\t{item}\t{rank}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return work, name, dataset.num_users, dataset.num_interactions


def run_child(command: list[str], log_path: Path) -> float:
    """Run one side in log_path's folder and return its wall seconds.

    RecBole writes its log folders into the working directory, so they land there too.
    """
    started = time.perf_counter()
    with log_path.open("w") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent)
    if completed.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed with exit code {completed.returncode}; see {log_path}")
    return time.perf_counter() - started


# ------------------------------------------------------------------------ report


def ndcg_at_10(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0)


def per_user(side: dict, users: list[str]) -> dict[str, np.ndarray]:
    ranks = np.array([side["test"][user]["rank"] for user in users], dtype=np.float64)
    return {
        "recall@10": (ranks <= 10).astype(np.float64),
        "ndcg@10": ndcg_at_10(ranks),
        "mrr@10": np.where(ranks <= 10, 1.0 / ranks, 0.0),
    }


def mean_se(values: np.ndarray) -> str:
    return f"{values.mean():.4f} ± {values.std(ddof=1) / math.sqrt(len(values)):.4f}"


def seconds_per_epoch(side: dict, epochs: int | None = None) -> float:
    """Return the mean training seconds of the side's epochs, or of its first ``epochs`` epochs."""
    return float(np.mean([row["train_seconds"] for row in side["epochs"][:epochs]]))


def time_to_reach(side: dict, target: float) -> tuple[float | None, int | None]:
    """Return the wall seconds (training plus validation) and the epoch at which validation NDCG@10 first reaches target."""
    for row in side["epochs"]:
        if row.get("valid_ndcg@10") is not None and row["valid_ndcg@10"] >= target:
            return row["elapsed_seconds"], row["epoch"]
    return None, None


def plot(sides: dict[str, dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, side in sides.items():
        xs = [row["elapsed_seconds"] / 60 for row in side["epochs"] if row.get("valid_ndcg@10") is not None]
        ys = [row["valid_ndcg@10"] for row in side["epochs"] if row.get("valid_ndcg@10") is not None]
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_xlabel("wall time, training plus validation (minutes)")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(args: argparse.Namespace, sides: dict[str, dict], users: int, events: int, command: str, png: Path) -> None:
    ours, recbole = sides["ours"], sides["recbole (anomaly off)"]
    shipped = sides.get("recbole (as shipped)")
    # Same held-out items on both sides, user by user.
    assert set(ours["test"]) == set(recbole["test"]), "the two sides evaluate different users"
    eval_users = sorted(ours["test"])
    valid_diff = sum(ours["valid"][u]["item"] != recbole["valid"][u]["item"] for u in eval_users)
    test_diff = sum(ours["test"][u]["item"] != recbole["test"][u]["item"] for u in eval_users)

    print(f"```\n{command}\n```\n")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- data: {args.dataset}, {users} users, {events} events, leave-one-out by time, full ranking, "
          f"history not excluded; RecBole read per-user ranks as timestamps")
    print(f"- split check: {len(eval_users)} users on each side; validation items differing: {valid_diff}, "
          f"test items differing: {test_diff}")
    print(f"- budget: at most {args.epochs} epochs, patience {args.patience}; seed {args.seed}; "
          f"{args.threads} torch thread(s) per side; "
          + ("sides run one after the other" if args.jobs == 1 else f"up to {args.jobs} sides ran at once"))
    print(f"- hardware: {os.cpu_count()} CPUs (nproc), {cpu_model()}, Python {platform.python_version()}; "
          f"ours torch {ours['torch']}, NumPy {ours['numpy']}; RecBole 1.2.1, torch {recbole['torch']}, "
          f"NumPy {recbole['numpy']}; load average at the end {load_average()}")
    print()
    print("| side | test Recall@10 | test NDCG@10 (± SE) | test MRR@10 | s/epoch (train) | epochs run | best epoch "
          "| best valid NDCG@10 | total wall (s) | peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    metrics = {}
    for label, side in sides.items():
        if label == "recbole (as shipped)" and shipped is not None and len(shipped["epochs"]) < len(recbole["epochs"]):
            print(f"| {label} | (timing run) | | | {seconds_per_epoch(side):.1f} | {len(side['epochs'])} | | | "
                  f"{side['wall_seconds']:.0f} | {side['peak_rss_mib']:.0f} |")
            continue
        values = per_user(side, eval_users)
        metrics[label] = values
        print(f"| {label} | {values['recall@10'].mean():.4f} | {mean_se(values['ndcg@10'])} | "
              f"{values['mrr@10'].mean():.4f} | {seconds_per_epoch(side):.1f} | {len(side['epochs'])} | "
              f"{side['best_epoch']} | {side['best_valid_ndcg@10']:.4f} | {side['wall_seconds']:.0f} | "
              f"{side['peak_rss_mib']:.0f} |")
    print()
    print(f"RecBole's own evaluator on its best checkpoint: "
          + ", ".join(f"{key} {value:.4f}" for key, value in recbole["recbole_test"].items()))
    print()
    for label in metrics:
        if label == "recbole (anomaly off)":
            continue
        diff = metrics[label]["ndcg@10"] - metrics["recbole (anomaly off)"]["ndcg@10"]
        print(f"- paired per-user test NDCG@10, {label} minus RecBole (anomaly off): {mean_se(diff)} "
              f"over {len(diff)} users; Recall@10 difference "
              f"{(metrics[label]['recall@10'] - metrics['recbole (anomaly off)']['recall@10']).mean():+.4f}")
    fastest = recbole
    if shipped is not None:
        # Compare the same epochs: the first ones, which the timing run covers.
        count = len(shipped["epochs"])
        ratio = seconds_per_epoch(shipped) / seconds_per_epoch(recbole, count)
        print(f"- RecBole seconds per epoch over the first {count} epoch(s), as shipped / anomaly off: "
              f"{seconds_per_epoch(shipped):.1f} / {seconds_per_epoch(recbole, count):.1f} = {ratio:.2f}; "
              f"anomaly detection during training: "
              f"{shipped['anomaly_enabled_during_training']} / {recbole['anomaly_enabled_during_training']}")
        if ratio < 1:
            fastest = shipped
    for label, side in sides.items():
        if not label.startswith("ours"):
            continue
        print(f"- seconds per epoch, RecBole (faster form) / {label}: "
              f"{seconds_per_epoch(fastest) / seconds_per_epoch(side):.1f}x")
        # RecBole's best, then the lower of the two bests, which both sides reach.
        lower = min(recbole["best_valid_ndcg@10"], side["best_valid_ndcg@10"])
        for name, target in (("RecBole's best", recbole["best_valid_ndcg@10"]), ("the lower best", lower)):
            ours_time, ours_epoch = time_to_reach(side, target)
            recbole_time, recbole_epoch = time_to_reach(recbole, target)
            if ours_time is None:
                print(f"- {label} never reached {name} validation NDCG@10 ({target:.4f}) within its budget "
                      f"(its best: {side['best_valid_ndcg@10']:.4f})")
            else:
                print(f"- wall time to reach {name} validation NDCG@10 ({target:.4f}): {label} {ours_time:.0f} s "
                      f"(epoch {ours_epoch}), RecBole {recbole_time:.0f} s (epoch {recbole_epoch}); "
                      f"ratio {ours_time / recbole_time:.3f}")
            if target == lower:
                break
    print(f"\nPlot: [{png.name}]({png.name}) (copied from {png})")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.side == "ours":
        run_ours(args)
        return 0
    args.data_dir = str(Path(args.data_dir).resolve())
    output = (Path(args.output_dir) / args.dataset).resolve()
    output.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "bench/recbole_compare.py", *(argv if argv is not None else sys.argv[1:])])
    venv = Path(args.recbole_venv)
    recbole_python = ensure_recbole_venv(venv)
    work, name, users, events = write_atomic_file(args, output / "atomic")

    def ours_command(epochs: int, tag: str, batch_size: int = 128) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--side", "ours", "--dataset", args.dataset, "--data-dir", args.data_dir,
                "--epochs", str(epochs), "--patience", str(args.patience), "--seed", str(args.seed),
                "--threads", str(args.threads), "--ours-batch-size", str(batch_size),
                "--side-output", str(output / f"{tag}.json")]

    def recbole_command(epochs: int, anomaly: str, tag: str) -> list[str]:
        return [str(recbole_python), str(BENCH_DIR / "recbole_side.py"), "--data-path", str(work), "--dataset", name,
                "--output", str(output / f"{tag}.json"), "--checkpoint-dir", str(output / f"checkpoints-{tag}"),
                "--epochs", str(epochs), "--patience", str(args.patience), "--seed", str(args.seed),
                "--threads", str(args.threads), "--anomaly", anomaly]

    # Labels, JSON names and commands, in the order they run.
    plan = [("ours", "ours", ours_command(args.epochs, "ours"))]
    plan.append(("recbole (anomaly off)", "recbole-off", recbole_command(args.epochs, "off", "recbole-off")))
    if args.ours_epochs:
        batch = args.ours_batch_size or 128
        plan.append((f"ours, batch {batch}, {args.ours_epochs} epochs", "ours-long",
                     ours_command(args.ours_epochs, "ours-long", batch)))
    if args.ours_batch_size:
        tag = f"ours-batch{args.ours_batch_size}"
        plan.append((f"ours, batch {args.ours_batch_size}", tag, ours_command(args.epochs, tag, args.ours_batch_size)))
    if args.shipped_epochs > 0:
        plan.append(("recbole (as shipped)", "recbole-shipped", recbole_command(args.shipped_epochs, "shipped", "recbole-shipped")))
    pending = []
    for label, tag, child in plan:
        result = output / f"{tag}.json"
        if args.reuse and result.exists():
            print(f"reusing {label}: {result}", file=sys.stderr)
        else:
            pending.append((label, tag, child))

    failure = threading.Event()

    def run_side(side: tuple[str, str, list[str]]) -> None:
        label, tag, child = side
        if failure.is_set():
            print(f"skipping {label}: an earlier side failed", file=sys.stderr)
            return
        print(f"running {label}: log {output / (tag + '.log')}", file=sys.stderr)
        try:
            run_child(child, output / f"{tag}.log")
        except BaseException:
            failure.set()
            raise

    # After a failure no further side starts. The ones already running finish,
    # then the first failure in plan order is raised.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(run_side, pending))
    sides = {label: json.loads((output / f"{tag}.json").read_text()) for label, tag, _ in plan}
    png = output / f"recbole_{args.dataset.replace('-', '')}.png"
    plot({k: v for k, v in sides.items() if k != "recbole (as shipped)"},
         f"SASRec on {args.dataset}: ours and RecBole 1.2.1", png)
    report(args, sides, users, events, command, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
