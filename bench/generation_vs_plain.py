"""Time the batched generator against a plain per-sequence loop on one trained model.

Usage:
    python bench/generation_vs_plain.py --checkpoint-dir /tmp/bench_registry --model 1 --dataset ml-100k

The plain loop is the straightforward form of fidelity-controlled generation.
Like the batched generator it runs one forward pass per step over all live
sequences and re-encodes the whole prefix at every step, because SASRec keeps
no key-value cache. Unlike it, the fidelity check and the choice of the next
item run in a Python loop over sequences. Per sequence and step it builds R
(the user's items not yet in the prefix) as a Python set. The best rank is
1 + the number of items scoring strictly above R's best score. The coin for
``p`` comes from the same up-front draws as the engine's (``draw_randomness``).
The pool is the user's items or the catalogue, minus padding and the prefix,
and the pool's highest-scoring item is appended.

Both sides get the same model, seed users, seed and parameters (greedy,
m=5, tau=20, p=0.5, max_len = the model's max_len), are timed in alternation
(one plain run, then one batched run, ``--repeats`` times), and must produce
the same sequences and stop reasons. The script prints a Markdown block to
paste into bench/RESULTS.md and writes nothing itself.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence

import torch
import torch.nn as nn

from machine import cpu_model, load_average
from rsir_engine.datasets import open_dataset
from rsir_engine.device import resolve_device
from rsir_engine.fidelity import StopReason
from rsir_engine.generation import GenerationConfig, draw_randomness, generate
from rsir_engine.model_io import load_version
from rsir_engine.registry import ModelRegistry


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", required=True, help="model registry folder")
    parser.add_argument("--model", default="champion", help="registry version or alias (default champion)")
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-1m"], help="dataset of the seed users")
    parser.add_argument("--data-dir", default=os.environ.get("RSIR_DATA_DIR", "data"), help="folder of named datasets")
    parser.add_argument("--users", type=int, default=None, help="seed from the first N users (default all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side, alternating (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the coin flips (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for both sides (default: torch's choice)")
    parser.add_argument("--profile", action="store_true",
                        help="after the timed runs, profile one run of each side with torch.profiler and print where the time goes")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.users is not None and args.users < 1:
        parser.error(f"--users must be at least 1, got {args.users}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


@torch.inference_mode()
def generate_plain(
    model: nn.Module, seed_histories: Sequence[Sequence[int]], config: GenerationConfig
) -> list[tuple[list[int], list[int], StopReason]]:
    """Generate greedily with a Python loop over sequences for the check and the choice.

    Returns:
        Per sequence, in the batched generator's order: the items, the best
        rank of every check made, and the stop reason.
    """
    device = next(model.parameters()).device
    max_len = min(config.max_len or model.config.max_len, model.config.max_len)
    num_sequences = len(seed_histories) * config.m
    coins, _ = draw_randomness(num_sequences, max_len, config.seed)
    coins_rows = coins.tolist()

    out: list[tuple[list[int], list[int], StopReason]] = []
    for start in range(0, num_sequences, config.batch_size):
        stop = min(start + config.batch_size, num_sequences)
        owners = [index // config.m for index in range(start, stop)]
        user_sets = [set(seed_histories[i]) - {0} for i in owners]
        user_sorted = [sorted(items) for items in user_sets]
        prefixes = [[seed_histories[i][0]] for i in owners]
        ranks: list[list[int]] = [[] for _ in owners]
        reasons: list[StopReason | None] = [None] * len(owners)

        active = list(range(len(owners)))
        for length in range(1, max_len):
            if not active:
                break
            batch = torch.tensor([prefixes[row] for row in active], dtype=torch.long, device=device)
            scores = model.score_last(batch).float()  # (A, N+1)
            survivors: list[int] = []
            for position, row in enumerate(active):
                row_scores = scores[position]
                prefix = prefixes[row]
                prefix_set = set(prefix)

                remaining = user_sets[row] - prefix_set
                if not remaining:
                    ranks[row].append(0)
                    reasons[row] = StopReason.EXHAUSTED
                    continue
                remaining_ids = torch.tensor(sorted(remaining), dtype=torch.long, device=device)
                best_score = row_scores[remaining_ids].max()
                rank = 1 + int((row_scores > best_score).sum())
                ranks[row].append(rank)
                if rank > config.tau:
                    reasons[row] = StopReason.FIDELITY
                    continue

                if coins_rows[start + row][length] < config.p:
                    pool = [item for item in user_sorted[row] if item not in prefix_set]
                    if not pool:
                        reasons[row] = StopReason.POOL_EMPTY
                        continue
                    pool_ids = torch.tensor(pool, dtype=torch.long, device=device)
                    chosen = pool[int(row_scores[pool_ids].argmax())]
                else:
                    if len(prefix_set) >= model.config.num_items:
                        reasons[row] = StopReason.POOL_EMPTY
                        continue
                    masked = row_scores.clone()
                    masked[torch.tensor(prefix, dtype=torch.long, device=device)] = float("-inf")
                    masked[0] = float("-inf")
                    chosen = int(masked.argmax())
                prefix.append(chosen)
                survivors.append(row)
            active = survivors
        for row in active:
            reasons[row] = StopReason.MAX_LEN
        out.extend((prefixes[row], ranks[row], reasons[row]) for row in range(len(owners)))
    return out


def run_batched(
    model: nn.Module, seed_histories: Sequence[Sequence[int]], config: GenerationConfig
) -> list[tuple[list[int], list[int], StopReason]]:
    """Generate with the engine and reduce each sequence to (items, ranks, stop reason)."""
    return [
        (sequence.items, [step.best_rank for step in sequence.steps], sequence.stop_reason)
        for sequence in generate(model, seed_histories, config)
    ]


def seed_histories_for(dataset_name: str, data_dir: str, loaded, users: int | None) -> tuple[list[list[int]], int]:
    """Return the seed users' training items in the model's internal ids, and how many items were unknown."""
    dataset = open_dataset(dataset_name, data_dir)
    train = dataset.split().train
    if users is not None:
        train = train[:users]
    histories: list[list[int]] = []
    unknown = 0
    for sequence in train:
        internal, missing = loaded.item_map.to_internal(dataset.item_map.to_raw(sequence), drop_unknown=True)
        unknown += len(missing)
        if internal:
            histories.append(internal)
    return histories, unknown


def main(argv: Sequence[str] | None = None) -> int:
    """Run both generators, check they agree and print the figures as Markdown."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    loaded = load_version(ModelRegistry(args.checkpoint_dir), args.model, device=device)
    model = loaded.model
    model.eval()
    histories, unknown = seed_histories_for(args.dataset, args.data_dir, loaded, args.users)
    config = GenerationConfig(m=5, tau=20, p=0.5, max_len=model.config.max_len, seed=args.seed)
    num_sequences = len(histories) * config.m
    load_before = load_average()

    # Warm-up outside the timing, so neither side pays for first-call allocations.
    warm = histories[: min(8, len(histories))]
    generate_plain(model, warm, config)
    run_batched(model, warm, config)

    plain_seconds: list[float] = []
    batched_seconds: list[float] = []
    plain_out = batched_out = None
    for _ in range(args.repeats):
        started = time.perf_counter()
        plain_out = generate_plain(model, histories, config)
        plain_seconds.append(time.perf_counter() - started)

        started = time.perf_counter()
        batched_out = run_batched(model, histories, config)
        batched_seconds.append(time.perf_counter() - started)
    load_after = load_average()

    different = sum(1 for a, b in zip(plain_out, batched_out) if a[0] != b[0] or a[2] != b[2])
    different += abs(len(plain_out) - len(batched_out))
    rank_differences = sum(1 for a, b in zip(plain_out, batched_out) if a[1] != b[1])
    steps = sum(len(ranks) for _, ranks, _ in batched_out)
    plain_rate = num_sequences / statistics.median(plain_seconds)
    batched_rate = num_sequences / statistics.median(batched_seconds)

    stops: dict[str, int] = {}
    for _, _, reason in batched_out:
        stops[reason.value] = stops.get(reason.value, 0) + 1
    mean_length = statistics.fmean(len(items) for items, _, _ in batched_out)

    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    command = "python " + " ".join(shlex.quote(part) for part in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    print(f"```\n{command}\n```\n")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- model: version {loaded.version} ({args.model!r}) from {args.checkpoint_dir}, "
          f"SASRec max_len {model.config.max_len}, hidden {model.config.hidden_size}, "
          f"{model.config.num_layers} layers, {model.config.num_items} items")
    print(f"- data: {args.dataset}, training items of the first {len(histories)} users "
          f"({unknown} items unknown to the model, dropped); {num_sequences} sequences")
    print(f"- parameters: greedy, m={config.m}, tau={config.tau}, p={config.p}, max_len={config.max_len}, "
          f"seed={config.seed}, batch_size={config.batch_size}")
    print(f"- hardware: {os.cpu_count()} CPUs (nproc), {cpu_model()}, torch {torch.__version__}, "
          f"device {device}{gpu}, {torch.get_num_threads()} torch threads")
    print(f"- load average (1, 5, 15 min): before {load_before}, after {load_after}")
    print(f"- output: {steps} fidelity checks, mean length {mean_length:.2f} items, stops {stops}")
    print()
    print("| side | runs (s) | median (s) | sequences/s |")
    print("| --- | --- | --- | --- |")
    print(f"| plain loop | {', '.join(f'{s:.2f}' for s in plain_seconds)} | {statistics.median(plain_seconds):.2f} | {plain_rate:.0f} |")
    print(f"| batched `generate` | {', '.join(f'{s:.2f}' for s in batched_seconds)} | {statistics.median(batched_seconds):.2f} | {batched_rate:.0f} |")
    print()
    print(f"- speed-up (median over median): {batched_rate / plain_rate:.1f}x")
    print(f"- identical: {'yes' if different == 0 else 'no'} ({different} of {num_sequences} sequences differ in items "
          f"or stop reason; {rank_differences} differ in the recorded ranks)")
    assert different == 0, f"{different} sequences differ between the plain loop and the batched generator"
    if args.profile:
        print_profile(model, histories, config, statistics.median(plain_seconds), statistics.median(batched_seconds))
    return 0


def print_profile(model: nn.Module, histories: list[list[int]], config: GenerationConfig, plain_s: float, batched_s: float) -> None:
    """Profile one run of each side and print the batched side's top operators and the bound they set.

    Both sides score the catalogue with one (rows x hidden) by (hidden x items)
    product per step (``aten::mm``). The batched side can never take less time
    than that product, so its speed-up is at most plain time / batched mm time.
    """
    from torch.profiler import ProfilerActivity, profile

    shares = {}
    for name, side in (("plain loop", generate_plain), ("batched `generate`", run_batched)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            side(model, histories, config)
        events = prof.key_averages()
        total = sum(event.self_cpu_time_total for event in events)
        shares[name] = (events, total, sum(event.self_cpu_time_total for event in events if event.key == "aten::mm") / total)
    events, total, _ = shares["batched `generate`"]
    print()
    print("Profile of one run per side (torch.profiler, self CPU time):")
    print()
    for name, (_, _, mm_share) in shares.items():
        print(f"- {name}: aten::mm (catalogue scores) is {100 * mm_share:.1f}% of the operator time")
    print()
    print("| batched `generate`: operator | self CPU (ms) | share |")
    print("| --- | --- | --- |")
    for event in sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[:10]:
        print(f"| {event.key} | {event.self_cpu_time_total / 1000:.0f} | {100 * event.self_cpu_time_total / total:.1f}% |")
    batched_mm_s = shares["batched `generate`"][2] * batched_s
    print()
    print(f"- bound: the plain loop's median {plain_s:.2f} s over the batched side's catalogue scoring "
          f"({batched_mm_s:.2f} s of its {batched_s:.2f} s median) = {plain_s / batched_mm_s:.1f}x at most")


if __name__ == "__main__":
    sys.exit(main())
