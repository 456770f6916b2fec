"""Peak resident memory of training, generation and the API process on MovieLens 1M.

Usage:
    .venv/bin/python bench/memory_ml1m.py --epochs 1

Each phase runs in its own process, so each peak is that process's alone:

1. training: ``rsir run --dataset ml-1m --rounds 0 --epochs N --promote`` into a
   fresh registry under ``--work-dir`` (loading the data, training, validating,
   testing and publishing the model);
2. generation: one round's generation from that model, as ``rsir run`` does it:
   every real user's training items as seeds, m=5, tau=20, p=0.5, greedy;
3. serving: ``rsir serve`` on ``--port`` with that registry (Redis database
   ``--redis-db``, no bootstrap), after ``--requests`` POST /augment requests of
   32 users each at m=5 from 4 concurrent clients, bounded by ``--max-seconds``.

The peak of phases 1 and 2 is the process's ``ru_maxrss`` from ``wait4``; the peak
of phase 3 is the API process's ``VmHWM`` from /proc. The script prints a Markdown
block for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from load_augment import real_users
from machine import cpu_model, load_average


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("RSIR_DATA_DIR", "data"), help="folder of named datasets")
    parser.add_argument("--work-dir", default="runs/bench/memory", help="registry and run folder (default runs/bench/memory)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    parser.add_argument("--port", type=int, default=8031, help="loopback port of the API (default 8031)")
    parser.add_argument("--redis-db", type=int, default=12, help="Redis database of the API (default 12)")
    parser.add_argument("--requests", type=int, default=100, help="POST /augment requests (default 100)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this long (default 120)")
    parser.add_argument("--phase", choices=["generate"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def generate_phase(args: argparse.Namespace) -> None:
    """Load the champion and generate from every real user (the child process of phase 2)."""
    from rsir_engine.augmentation import select_augmentations
    from rsir_engine.datasets import open_dataset
    from rsir_engine.generation import GenerationConfig, generate
    from rsir_engine.model_io import load_version
    from rsir_engine.registry import ModelRegistry

    dataset = open_dataset("ml-1m", args.data_dir)
    split = dataset.split()
    loaded = load_version(ModelRegistry(Path(args.work_dir) / "registry"), "champion")
    before = rss_mib(os.getpid(), "VmRSS")
    started = time.perf_counter()
    generated = generate(loaded.model, [seq for seq in split.train if seq], GenerationConfig(m=5, seed=1))
    kept, stats = select_augmentations(generated, min_len=3, existing=split.train)
    print(json.dumps({"rss_before_mib": before, "sequences": stats.started, "kept": stats.kept,
                      "seconds": time.perf_counter() - started}))


def rss_mib(pid: int, field: str) -> float:
    """Return a memory field of /proc/<pid>/status (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} missing from /proc/{pid}/status")


def run_measured(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a child to completion and return its peak RSS in MiB, its wall seconds and its stdout."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed with exit code {child.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started, output


def serve_phase(args: argparse.Namespace, registry: Path) -> dict:
    """Start the API on the registry, send bounded /augment traffic, read its peak RSS."""
    env = {**os.environ, "RSIR_CHECKPOINT_DIR": str(registry), "RSIR_BOOTSTRAP_CHAMPION": "false",
           "RSIR_REDIS_URL": f"redis://127.0.0.1:6379/{args.redis_db}", "RSIR_TORCH_THREADS": "1",
           "RSIR_DATA_DIR": args.data_dir}
    server = subprocess.Popen([sys.executable, "-m", "rsir_engine.cli", "serve", "--port", str(args.port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the API on {url} did not become ready within 180 s or exited; run `rsir serve` by hand to see why")
                time.sleep(0.5)
            idle = rss_mib(server.pid, "VmRSS")
            users = real_users("ml-1m", args.data_dir)
            stop_at = time.monotonic() + args.max_seconds
            sent = failed = 0

            def send(index: int) -> int:
                if time.monotonic() > stop_at:
                    return -1
                chosen = [users[(index * 32 + offset) % len(users)] for offset in range(32)]
                return client.post("/augment", json={"users": chosen, "m": 5, "seed": index}).status_code

            with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
                for status in pool.map(send, range(args.requests)):
                    if status == -1:
                        continue
                    sent += 1
                    failed += status != 200
        return {"idle_mib": idle, "peak_mib": rss_mib(server.pid, "VmHWM"), "sent": sent, "failed": failed}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.data_dir = str(Path(args.data_dir).resolve())
    if args.phase == "generate":
        generate_phase(args)
        return 0
    command = shlex.join(["python", "bench/memory_ml1m.py", *(argv if argv is not None else sys.argv[1:])])
    work = Path(args.work_dir).resolve()
    registry = work / "registry"
    if registry.exists() and any(registry.iterdir()):
        raise SystemExit(f"{registry} is not empty; remove it or pass another --work-dir")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train_peak, train_seconds, _ = run_measured(
        [sys.executable, "-m", "rsir_engine.cli", "run", "--dataset", "ml-1m", "--rounds", "0", "--epochs", str(args.epochs),
         "--promote", "--checkpoint-dir", str(registry), "--runs-dir", str(work / "runs"), "--data-dir", args.data_dir,
         "--no-progress", "--device", "cpu"], env)
    generate_peak, generate_seconds, output = run_measured(
        [sys.executable, str(Path(__file__).resolve()), "--phase", "generate", "--work-dir", str(work),
         "--data-dir", args.data_dir], env)
    generated = json.loads(output.strip().splitlines()[-1])
    served = serve_phase(args, registry)

    print(f"```\n{command}\n```\n")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- data: ml-1m (6040 users, 3706 items, 1,000,209 ratings); SASRec hidden 64, 2 layers, max length 50")
    print(f"- hardware: {os.cpu_count()} CPUs (nproc), {cpu_model()}, Python {platform.python_version()}, "
          f"one torch thread per process; load average at the end {load_average()}")
    print()
    print("| phase | what ran | wall (s) | peak RSS (MiB) |")
    print("| --- | --- | --- | --- |")
    print(f"| training | `rsir run --rounds 0 --epochs {args.epochs}`: load, train, validate, test, publish | "
          f"{train_seconds:.0f} | {train_peak:.0f} |")
    print(f"| generation | {generated['sequences']} sequences from 6040 users (m=5), {generated['kept']} kept; "
          f"{generated['rss_before_mib']:.0f} MiB before generating | {generate_seconds:.0f} | {generate_peak:.0f} |")
    print(f"| serving | `rsir serve`, {served['sent']} POST /augment of 32 users at m=5 from 4 clients, "
          f"{served['failed']} failed; {served['idle_mib']:.0f} MiB when ready | - | {served['peak_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
