"""Read the synthetic sequences a round job kept and write them in raw ids.

The engine writes ``<run_dir>/round_<r>/synthetic.jsonl`` in internal ids (1..N). The
manifest of the model published in the same round lists ``item_ids``, where index ``i``
contains the raw id of internal id ``i + 1``, and this module maps ids with it. Pseudo-user ids are
``rsir_r<round>_<seed user>_<n>``, the n-th sequence seeded by that real user.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "MEDIA_TYPES",
    "RoundSequence",
    "iter_inter_lines",
    "iter_jsonl_lines",
    "read_round_sequences",
    "synthetic_path",
    "to_parquet",
]

MEDIA_TYPES = {
    "inter": "text/tab-separated-values; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


@dataclass
class RoundSequence:
    """One kept synthetic sequence in raw ids, with its fidelity record."""

    user_id: str
    seed_index: int
    seed_user: int | str | None  # raw id of the real user it started from; None for a pseudo-user seed
    items: list[int | str]
    stop_reason: str
    steps: list[dict[str, Any]]  # StepRecord dicts with ``item`` as a raw id


def synthetic_path(run_dir: str | Path, round_index: int) -> Path:
    """Return where the engine keeps a round's synthetic sequences."""
    return Path(run_dir) / f"round_{round_index}" / "synthetic.jsonl"


def _seed_users(run_dir: Path) -> list[int | str]:
    try:
        return json.loads((run_dir / "seed_users.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []


def read_round_sequences(run_dir: str | Path, round_index: int, item_ids: Sequence[int | str]) -> list[RoundSequence]:
    """Read a round's kept sequences and map them to raw ids with ``item_ids``."""
    run_dir = Path(run_dir)
    seeds = _seed_users(run_dir)

    def raw(item: int | None) -> int | str | None:
        return item_ids[item - 1] if item else None

    sequences: list[RoundSequence] = []
    per_seed: dict[str, int] = {}
    with open(synthetic_path(run_dir, round_index), encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            seed_index = int(record["seed_index"])
            seed_user = seeds[seed_index] if seed_index < len(seeds) else None
            seed_label = str(seed_user) if seed_user is not None else f"seed{seed_index}"
            per_seed[seed_label] = per_seed.get(seed_label, 0) + 1
            steps = [{**step, "item": raw(step.get("item"))} for step in record["steps"]]
            sequences.append(
                RoundSequence(
                    user_id=f"rsir_r{round_index}_{seed_label}_{per_seed[seed_label]}",
                    seed_index=seed_index,
                    seed_user=seed_user,
                    items=[raw(item) for item in record["items"]],
                    stop_reason=record["stop_reason"],
                    steps=steps,
                )
            )
    return sequences


def iter_inter_lines(sequences: Sequence[RoundSequence]) -> Iterator[str]:
    """Yield a RecBole ``.inter`` file; the timestamp is the item's position in its sequence."""
    yield INTER_HEADER
    for sequence in sequences:
        for position, item in enumerate(sequence.items):
            yield f"{sequence.user_id}\t{item}\t{position}\n"


def iter_jsonl_lines(sequences: Sequence[RoundSequence], round_index: int) -> Iterator[str]:
    """Yield one JSON object per sequence, with its fidelity record."""
    for sequence in sequences:
        yield json.dumps(
            {
                "user_id": sequence.user_id,
                "round": round_index,
                "seed_index": sequence.seed_index,
                "seed_user": sequence.seed_user,
                "items": sequence.items,
                "stop_reason": sequence.stop_reason,
                "steps": sequence.steps,
            }
        ) + "\n"


def to_parquet(sequences: Sequence[RoundSequence]) -> bytes:
    """Return a Parquet file with one row per interaction, like the ``.inter`` output."""
    items = [item for sequence in sequences for item in sequence.items]
    # A Parquet column has one type, so mixed integer and string ids are all written as strings.
    if not all(isinstance(item, int) for item in items):
        items = [str(item) for item in items]
    table = pa.table(
        {
            "user_id": pa.array([sequence.user_id for sequence in sequences for _ in sequence.items], pa.string()),
            "item_id": pa.array(items, pa.int64() if items and isinstance(items[0], int) else pa.string()),
            "timestamp": pa.array([position for sequence in sequences for position in range(len(sequence.items))], pa.int64()),
            "seed_user": pa.array(
                [None if sequence.seed_user is None else str(sequence.seed_user) for sequence in sequences for _ in sequence.items],
                pa.string(),
            ),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()
