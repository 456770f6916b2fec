"""Measure /augment latency and throughput of a running API with a bounded load.

Usage:
    python bench/load_augment.py --url http://127.0.0.1:8000 --dataset ml-100k

The API must already be running and ready (GET /readyz returns 200); this
script starts nothing. Each request carries K real users of the dataset, each
with all of the user's training items as raw ids (the API reads the most recent
``max_len`` of them), and requests m synthetic sequences per user. Users are
taken in order and wrap around, so a run is repeatable.

Every cell of the grid (users per request x concurrent clients) sends
``--warmup`` untimed requests, then at most ``--requests`` timed ones, and
stops sending after ``--max-seconds``. Latency is measured at the client, from
sending the request to reading the whole response. The client runs on the same
machine as the API, so on a small machine it competes with the server for CPU.
The script prints a Markdown block to paste into bench/RESULTS.md and writes
nothing itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from machine import cpu_model, load_average
from rsir_engine.datasets import open_dataset

DEFAULT_URL = "http://127.0.0.1:8000"
REQUEST_TIMEOUT_S = 60.0  # per request; a slower reply counts as an error


@dataclass
class CellResult:
    """Timings of one grid cell."""

    users_per_request: int
    clients: int
    latencies_s: list[float] = field(default_factory=list)  # timed requests with status 200
    errors: dict[str, int] = field(default_factory=dict)  # status code or exception name -> count
    wall_s: float = 0.0  # from the first timed request to the last reply
    kept: int = 0  # sequences returned over the timed requests
    started: int = 0  # sequences started over the timed requests
    stopped_early: bool = False  # the time bound ended the cell before the request bound
    load_before: str = ""
    load_after: str = ""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"base URL of the API (default {DEFAULT_URL})")
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-1m"], help="dataset whose real users are sent")
    parser.add_argument("--data-dir", default=os.environ.get("RSIR_DATA_DIR", "data"), help="folder of named datasets")
    parser.add_argument("--users-per-request", default="1,8,32", help="comma-separated K values (default 1,8,32)")
    parser.add_argument("--clients", default="1,8", help="comma-separated concurrent client counts (default 1,8)")
    parser.add_argument("--m", type=int, default=5, help="synthetic sequences per user (default 5)")
    parser.add_argument("--requests", type=int, default=200, help="maximum timed requests per cell (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up requests per cell (default 10)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop sending in a cell after this many seconds (default 60)")
    args = parser.parse_args(argv)
    args.users_per_request = [int(value) for value in args.users_per_request.split(",")]
    args.clients = [int(value) for value in args.clients.split(",")]
    if min(args.users_per_request) < 1 or min(args.clients) < 1:
        parser.error("--users-per-request and --clients take positive integers, such as 1,8,32")
    if args.requests < 1 or args.warmup < 0 or args.max_seconds <= 0:
        parser.error("--requests must be at least 1, --warmup at least 0 and --max-seconds positive")
    return args


def real_users(dataset_name: str, data_dir: str) -> list[dict[str, Any]]:
    """Return every real user with training items as ``{"user_id", "items"}`` in raw ids."""
    dataset = open_dataset(dataset_name, data_dir)
    split = dataset.split()
    return [
        {"user_id": user_id, "items": dataset.item_map.to_raw(items)}
        for user_id, items in zip(dataset.user_ids, split.train)
        if items
    ]


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def run_cell(
    client: httpx.AsyncClient, users: list[dict[str, Any]], k: int, clients: int, args: argparse.Namespace
) -> CellResult:
    """Send one cell's warm-up and timed requests from ``clients`` concurrent workers."""
    result = CellResult(users_per_request=k, clients=clients, load_before=load_average())
    next_request = 0

    def body_for(index: int) -> dict[str, Any]:
        first = (index * k) % len(users)
        chosen = [users[(first + offset) % len(users)] for offset in range(k)]
        return {"users": chosen, "m": args.m, "seed": index}

    async def send(index: int) -> tuple[float, httpx.Response | None, str | None]:
        started = time.perf_counter()
        try:
            response = await client.post("/augment", json=body_for(index))
        except httpx.HTTPError as exc:
            return time.perf_counter() - started, None, type(exc).__name__
        return time.perf_counter() - started, response, None

    async def worker(limit: int, deadline: float, timed: bool) -> None:
        nonlocal next_request
        while next_request < limit and time.perf_counter() < deadline:
            index = next_request
            next_request += 1
            elapsed, response, failure = await send(index)
            if not timed:
                continue
            if response is None or response.status_code != 200:
                key = failure or str(response.status_code)
                result.errors[key] = result.errors.get(key, 0) + 1
                continue
            result.latencies_s.append(elapsed)
            stats = response.json()["stats"]
            result.kept += stats["kept"]
            result.started += stats["started"]

    deadline = time.perf_counter() + args.max_seconds
    await asyncio.gather(*(worker(args.warmup, deadline, False) for _ in range(clients)))

    next_request = 0
    started = time.perf_counter()
    deadline = started + args.max_seconds
    await asyncio.gather(*(worker(args.requests, deadline, True) for _ in range(clients)))
    result.wall_s = time.perf_counter() - started
    result.stopped_early = next_request < args.requests
    result.load_after = load_average()
    return result


def describe_model(client: httpx.Client) -> str:
    """Return the served model version with its dataset and size, from /readyz and /models/{version}."""
    ready = client.get("/readyz")
    if ready.status_code != 200:
        raise SystemExit(f"the API at {client.base_url} is not ready (GET /readyz returned {ready.status_code}: {ready.text}); "
                         "start it with `bash scripts/up.sh` or pass --url")
    version = ready.json().get("model_version")
    detail = client.get(f"/models/{version}")
    if detail.status_code != 200:
        return f"version {version}"
    body = detail.json()
    config = body.get("architecture_config", {})
    dataset = body.get("dataset", {})
    return (f"version {version} ({', '.join(body.get('aliases', [])) or 'no alias'}), {body.get('architecture')} "
            f"max_len {config.get('max_len')}, hidden {config.get('hidden_size')}, {config.get('num_layers')} layers, "
            f"{body.get('num_items')} items, trained on {dataset.get('name')}")


async def run_grid(users: list[dict[str, Any]], args: argparse.Namespace) -> list[CellResult]:
    """Run every cell of the grid in order, one after another."""
    limits = httpx.Limits(max_connections=max(args.clients), max_keepalive_connections=max(args.clients))
    results: list[CellResult] = []
    async with httpx.AsyncClient(base_url=args.url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        for k in args.users_per_request:
            for clients in args.clients:
                results.append(await run_cell(client, users, k, clients, args))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Check the API, run the grid and print the figures as Markdown."""
    args = parse_args(argv)
    with httpx.Client(base_url=args.url, timeout=REQUEST_TIMEOUT_S) as client:
        model = describe_model(client)
    users = real_users(args.dataset, args.data_dir)
    results = asyncio.run(run_grid(users, args))

    command = "python " + " ".join(shlex.quote(part) for part in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    print(f"```\n{command}\n```\n")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- API: {args.url}, model {model}")
    print(f"- data: {len(users)} real users of {args.dataset}, all training items of each as raw ids; m={args.m}, "
          "tau, p, max_len and min_len at the API defaults, seed = request index")
    print(f"- bounds per cell: {args.warmup} warm-up requests, then at most {args.requests} timed requests "
          f"or {args.max_seconds:.0f} s")
    print(f"- hardware: {os.cpu_count()} CPUs (nproc), {cpu_model()}; client and API on the same machine; "
          f"httpx {httpx.__version__}")
    print()
    print("| users/request | clients | requests | errors | req/s | p50 (ms) | p95 (ms) | p99 (ms) | kept/started | load avg before -> after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for cell in results:
        errors = sum(cell.errors.values())
        error_text = str(errors) if not errors else f"{errors} {cell.errors}"
        count = len(cell.latencies_s)
        if count:
            ms = [value * 1000 for value in cell.latencies_s]
            figures = f"{count / cell.wall_s:.1f} | {statistics.median(ms):.1f} | {percentile(ms, 95):.1f} | {percentile(ms, 99):.1f}"
        else:
            figures = "- | - | - | -"
        bound = " (time bound hit)" if cell.stopped_early else ""
        print(f"| {cell.users_per_request} | {cell.clients} | {count}{bound} | {error_text} | {figures} | "
              f"{cell.kept}/{cell.started} | {cell.load_before.split()[0]} -> {cell.load_after.split()[0]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
