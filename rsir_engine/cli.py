"""The ``rsir`` command line: fetch data, run rounds, augment files, serve."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from rsir_engine.errors import RSIRError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("rsir_engine.cli")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation (RSIR parameters)")
    group.add_argument("--m", type=int, default=5, help="synthetic sequences started per seed user (default 5)")
    group.add_argument("--tau", type=int, default=20, help="fidelity rank threshold, 1 = top item only (default 20)")
    group.add_argument("--p", type=float, default=0.5, help="probability that a step picks from the user's own items (default 0.5)")
    group.add_argument("--max-len", type=int, default=None, help="maximum synthetic sequence length in items (default: the model's max_len)")
    group.add_argument("--min-len", type=int, default=3, help="shortest synthetic sequence kept, in items (default 3)")
    group.add_argument("--temperature", type=float, default=None, help="sample with this softmax temperature instead of greedy choice")
    group.add_argument("--top-k", type=int, default=None, help="sample among the k best candidates instead of greedy choice")
    group.add_argument("--no-fidelity", action="store_true", help="switch the fidelity stop off (ablation); ranks are still recorded")
    group.add_argument("--generation-seed", type=int, default=0, help="seed of the coin flips and sampling (default 0)")


def _generation_config(args: argparse.Namespace):
    from rsir_engine.generation import GenerationConfig

    return GenerationConfig(
        m=args.m,
        tau=args.tau,
        p=args.p,
        max_len=args.max_len,
        min_len=args.min_len,
        temperature=args.temperature,
        top_k=args.top_k,
        fidelity=not args.no_fidelity,
        seed=args.generation_seed,
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="rsir", description="Recursive Self-Improving Recommendation")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="named public datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("fetch", help="download a named dataset into the data directory")
    fetch.add_argument("name", help="ml-100k or ml-1m")
    fetch.add_argument("--data-dir", default=_env("RSIR_DATA_DIR", "data"), help="target folder (env RSIR_DATA_DIR, default ./data)")
    fetch.add_argument("--force", action="store_true", help="download again even if the file is present")
    data_commands.add_parser("list", help="list the named datasets")

    run = commands.add_parser("run", help="train round 0 and run self-improvement rounds")
    run.add_argument("--dataset", default="ml-100k", help="ml-100k, ml-1m, or a CSV, Parquet or .inter file (default ml-100k)")
    run.add_argument("--rounds", type=int, default=3, help="self-improvement rounds after round 0 (default 3)")
    run.add_argument("--data-dir", default=_env("RSIR_DATA_DIR", "data"), help="folder of named datasets (env RSIR_DATA_DIR)")
    run.add_argument("--runs-dir", default=_env("RSIR_RUNS_DIR", "runs"), help="parent folder of run folders (env RSIR_RUNS_DIR, default ./runs)")
    run.add_argument("--run-id", default=None, help="name of the run; an existing run folder with this name is resumed")
    run.add_argument(
        "--checkpoint-dir", default=_env("RSIR_CHECKPOINT_DIR", "models"), help="model registry folder (env RSIR_CHECKPOINT_DIR, default ./models)"
    )
    run.add_argument("--promote", action="store_true", help="point the champion alias at the round with the best validation NDCG@10")
    run.add_argument("--device", default=_env("RSIR_DEVICE", "auto"), help="auto, cpu or cuda (default auto: CUDA when present)")
    run.add_argument("--min-rating", type=float, default=None, help="keep only events rated at least this much")
    run.add_argument("--k-core", type=int, default=None, help="iteratively drop users and items with fewer events")
    run.add_argument("--user-col", default="user_id", help="user column of a file dataset")
    run.add_argument("--item-col", default="item_id", help="item column of a file dataset")
    run.add_argument("--time-col", default="timestamp", help="timestamp column of a file dataset (integer seconds)")
    model = run.add_argument_group("model and training")
    model.add_argument("--architecture", default="sasrec", help="sequential recommender (default sasrec)")
    model.add_argument("--model-max-len", type=int, default=50, help="items of context the model reads (default 50)")
    model.add_argument("--hidden-size", type=int, default=64)
    model.add_argument("--layers", type=int, default=2)
    model.add_argument("--heads", type=int, default=2)
    model.add_argument("--dropout", type=float, default=0.2)
    model.add_argument("--epochs", type=int, default=200, help="maximum epochs per model (default 200)")
    model.add_argument("--patience", type=int, default=10, help="epochs without a better validation NDCG@10 before stopping (default 10)")
    model.add_argument("--batch-size", type=int, default=128, help="training windows per step (default 128)")
    model.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    model.add_argument("--num-negatives", type=int, default=None, help="sampled softmax with this many negatives (default: full softmax)")
    model.add_argument("--exclude-history", action="store_true", help="exclude each user's history items from the ranking")
    model.add_argument("--warm-start", action="store_true", help="start each successor from its parent's weights")
    model.add_argument("--seed-from", choices=("real", "all"), default="real", help="seed generation from real users only or from every sequence")
    model.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    model.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_generation_options(run)

    augment = commands.add_parser("augment", help="augment a file of user sequences with a published model")
    augment.add_argument("input", help="interactions (CSV, Parquet, .inter) or JSONL lines {\"user_id\": ..., \"items\": [...]}")
    augment.add_argument("--model", default="champion", help="registry version or alias, or a checkpoint folder (default champion)")
    augment.add_argument("--checkpoint-dir", default=_env("RSIR_CHECKPOINT_DIR", "models"), help="model registry folder")
    augment.add_argument("--output-dir", default="augmented", help="folder for augmentations.jsonl and augmentations.inter")
    augment.add_argument("--drop-unknown", action="store_true", help="drop unknown item ids and report their count instead of failing")
    augment.add_argument("--device", default=_env("RSIR_DEVICE", "auto"))
    augment.add_argument("--user-col", default="user_id")
    augment.add_argument("--item-col", default="item_id")
    augment.add_argument("--time-col", default="timestamp")
    _add_generation_options(augment)

    serve = commands.add_parser("serve", help="start the HTTP API (uvicorn)")
    serve.add_argument("--host", default=_env("RSIR_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(_env("RSIR_PORT", "8000")))
    commands.add_parser("worker", help="start a worker that runs round jobs from Redis")
    openapi = commands.add_parser("openapi", help="write the service's OpenAPI document")
    openapi.add_argument("--output", default="openapi.yaml")
    return parser


def _cmd_data(args: argparse.Namespace) -> int:
    from rsir_engine.datasets import DATASETS, fetch_dataset, is_fetched

    if args.data_command == "list":
        data_dir = _env("RSIR_DATA_DIR", "data")
        for name, spec in DATASETS.items():
            state = "fetched" if is_fetched(name, data_dir) else "not fetched"
            print(f"{name:10s} {state:12s} {spec.description}")
        return 0
    path = fetch_dataset(args.name, args.data_dir, force=args.force)
    print(path)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from rsir_engine.architectures import SASRecConfig
    from rsir_engine.datasets import open_dataset
    from rsir_engine.registry import ModelRegistry
    from rsir_engine.reporting import format_table, write_run_reports
    from rsir_engine.rounds import RoundConfig, run_rounds
    from rsir_engine.training import TrainConfig

    config = RoundConfig(
        rounds=args.rounds,
        architecture=args.architecture,
        model=SASRecConfig(
            num_items=1,
            max_len=args.model_max_len,
            hidden_size=args.hidden_size,
            num_layers=args.layers,
            num_heads=args.heads,
            dropout=args.dropout,
        ),
        generation=_generation_config(args),
        train=TrainConfig(
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            patience=args.patience,
            num_negatives=args.num_negatives,
            exclude_history=args.exclude_history,
            seed=args.seed,
            progress=not args.no_progress,
        ),
        warm_start=args.warm_start,
        seed_from=args.seed_from,
        device=args.device,
    )
    dataset = open_dataset(
        args.dataset,
        args.data_dir,
        min_rating=args.min_rating,
        k_core=args.k_core,
        user_col=args.user_col,
        item_col=args.item_col,
        time_col=args.time_col,
    )
    run_id = args.run_id or f"{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{dataset.name}"
    run_dir = Path(args.runs_dir) / run_id
    registry = ModelRegistry(args.checkpoint_dir)
    started = time.perf_counter()
    result = run_rounds(dataset, config, registry=registry, run_dir=run_dir, run_id=run_id)
    paths = write_run_reports(result, run_dir)
    print(format_table(result.rounds))
    print(f"wall time {time.perf_counter() - started:.0f} s on {result.device}; run folder {run_dir}")
    print(f"results: {paths['json']}, {paths['csv']}, {paths['plot']}")
    if args.promote:
        best = max(result.rounds, key=lambda row: row.valid.get("ndcg@10", 0.0))
        if best.version is not None:
            registry.set_alias("champion", best.version, reason=f"best validation NDCG@10 of run {run_id}", actor="rsir run")
            print(f"champion -> version {best.version} (round {best.round})")
    return 0


def _read_user_sequences(args: argparse.Namespace) -> list[tuple[object, list]]:
    import json

    import numpy as np
    import pandas as pd

    from rsir_engine.data import load_interactions
    from rsir_engine.errors import DataError

    path = Path(args.input)
    if path.suffix == ".jsonl":
        users = []
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    users.append((record["user_id"], list(record["items"])))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise DataError(
                        f"{path}:{line_number} is not a JSON object with user_id and items ({exc}); "
                        'write lines like {"user_id": 1, "items": [10, 20]}'
                    ) from None
        return users
    frame = load_interactions(path, user_col=args.user_col, item_col=args.item_col, time_col=args.time_col)
    user_codes, user_ids = pd.factorize(frame["user_id"], sort=False)
    # Same order rule as training data: by timestamp, ties in file order.
    order = np.lexsort((np.arange(len(frame)), frame["timestamp"].to_numpy(dtype=np.int64), user_codes))
    items = frame["item_id"].to_numpy(dtype=object)[order]
    boundaries = np.flatnonzero(np.diff(user_codes[order])) + 1
    return [(user_ids[int(chunk[0])], list(chunk_items)) for chunk, chunk_items in zip(np.split(user_codes[order], boundaries), np.split(items, boundaries))]


def _cmd_augment(args: argparse.Namespace) -> int:
    from rsir_engine.device import resolve_device
    from rsir_engine.model_io import load_checkpoint_dir, load_version
    from rsir_engine.pipeline import augment_users, write_augmentations_inter, write_augmentations_jsonl
    from rsir_engine.registry import ModelRegistry

    device = resolve_device(args.device)
    if Path(args.model).is_dir():
        loaded = load_checkpoint_dir(args.model, device=device)
    else:
        loaded = load_version(ModelRegistry(args.checkpoint_dir), args.model, device=device)
    users = _read_user_sequences(args)
    outcome = augment_users(loaded, users, _generation_config(args), drop_unknown=args.drop_unknown)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_augmentations_jsonl(outcome.augmentations, out / "augmentations.jsonl")
    write_augmentations_inter(outcome.augmentations, out / "augmentations.inter")
    stats = outcome.stats
    print(
        f"model version {loaded.version}: {len(outcome.prepared.histories)} users, started {stats.started}, "
        f"kept {stats.kept}, dropped short {stats.dropped_short}, duplicates {stats.duplicates + stats.copies_of_existing}, "
        f"stops {stats.stop_reasons}"
    )
    if outcome.prepared.dropped_items:
        print(
            f"dropped {outcome.prepared.dropped_items} event(s) with {len(outcome.prepared.unknown_items)} unknown item id(s); "
            f"{len(outcome.prepared.skipped_users)} user(s) had no known item left"
        )
    if outcome.prepared.truncated_users:
        print(f"{outcome.prepared.truncated_users} history(ies) were cut to the model's {loaded.model.config.max_len} most recent items")
    print(f"wrote {out / 'augmentations.jsonl'} and {out / 'augmentations.inter'}")
    return 0


def _cmd_service(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from app.main import serve

        serve(host=args.host, port=args.port)
    elif args.command == "worker":
        from app.worker.run import run_worker

        run_worker()
    else:
        from app.openapi_export import write_openapi

        write_openapi(args.output)
        print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``rsir`` command line and return its exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handlers = {"data": _cmd_data, "run": _cmd_run, "augment": _cmd_augment}
    try:
        handler = handlers.get(args.command, _cmd_service)
        return handler(args)
    except RSIRError as exc:
        print(f"rsir: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rsir: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
