"""Load interactions, order them per user, remap ids and split leave-one-out.

Ordering rule: each user's events are sorted by timestamp, and events with equal
timestamps keep the order in which they appear in the source file (a stable
sort). Timestamps are read and kept as 64-bit integers, so two events 50 s
apart near 1.7e9 s never collapse into one value as they would in float32.

Internal item ids run from 1 to N; 0 is padding. A raw item id ``0`` is an
ordinary item and gets an internal id like any other.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rsir_engine.errors import DataError, EmptyInputError, UnknownItemsError

__all__ = [
    "ItemMap",
    "LeaveOneOutSplit",
    "SequenceDataset",
    "build_dataset",
    "filter_interactions",
    "load_interactions",
    "normalize_raw_id",
]

logger = logging.getLogger(__name__)

USER = "user_id"
ITEM = "item_id"
TIME = "timestamp"
RATING = "rating"


def normalize_raw_id(raw: object) -> int | str:
    """Return a raw id as a Python ``int`` when it is integral, else as a ``str``.

    JSON clients send ``50`` or ``"50"`` for the same item, and pandas returns
    ``numpy.int64``; all three map to the same key.
    """
    if isinstance(raw, bool):
        raise DataError(f"item id {raw!r} is a boolean; send an integer or a string")
    if isinstance(raw, (int, np.integer)):
        return int(raw)
    if isinstance(raw, (float, np.floating)):
        if not float(raw).is_integer():
            raise DataError(f"item id {raw!r} is not an integer; send an integer or a string")
        return int(raw)
    text = str(raw).strip()
    if text == "":
        raise DataError("an item id is empty; send a non-empty integer or string")
    if text.lstrip("-").isdigit():
        return int(text)
    return text


@dataclass(frozen=True)
class ItemMap:
    """Bidirectional map between raw item ids and internal ids 1..N (0 is padding)."""

    raw_ids: tuple[int | str, ...]
    _index: dict[int | str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {raw: position + 1 for position, raw in enumerate(self.raw_ids)}
        if len(index) != len(self.raw_ids):
            raise DataError("item map has duplicate raw ids")
        object.__setattr__(self, "_index", index)

    @property
    def num_items(self) -> int:
        """Number of real items, excluding padding."""
        return len(self.raw_ids)

    def __contains__(self, raw: object) -> bool:
        try:
            return normalize_raw_id(raw) in self._index
        except DataError:
            return False

    def to_internal(self, raw_items: Iterable[object], *, drop_unknown: bool = False) -> tuple[list[int], list]:
        """Map raw ids to internal ids.

        Returns:
            The internal ids and the list of unknown raw ids (empty unless
            ``drop_unknown`` is true, in which case they were skipped).

        Raises:
            UnknownItemsError: if any id is unknown and ``drop_unknown`` is false.
        """
        internal: list[int] = []
        unknown: list = []
        for raw in raw_items:
            key = normalize_raw_id(raw)
            item = self._index.get(key)
            if item is None:
                unknown.append(key)
                continue
            internal.append(item)
        if unknown and not drop_unknown:
            raise UnknownItemsError(list(dict.fromkeys(unknown)))
        return internal, unknown

    def to_raw(self, internal_items: Iterable[int]) -> list[int | str]:
        """Map internal ids (1..N) back to raw ids.

        Raises:
            DataError: an id is padding (0) or outside the catalogue.
        """
        items = [int(item) for item in internal_items]
        bad = [item for item in items if not 1 <= item <= len(self.raw_ids)]
        if bad:
            raise DataError(f"internal item id(s) {bad[:20]} are outside 1..{len(self.raw_ids)}; 0 is padding")
        return [self.raw_ids[item - 1] for item in items]


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Leave-one-out split by time of every real user's sequence.

    ``train[u]`` contains all but the last two items, ``valid_targets[u]`` the
    second to last and ``test_targets[u]`` the last. Users with fewer than three
    events get ``0`` targets and are listed in ``skipped_users``. Their few items
    stay in ``train``, so the model still trains on them.
    """

    train: list[list[int]]
    valid_targets: np.ndarray  # (U,) int64, 0 where the user is too short
    test_targets: np.ndarray  # (U,) int64, 0 where the user is too short
    skipped_users: list[int]

    @property
    def eval_users(self) -> np.ndarray:
        """Indices of users that have validation and test targets."""
        return np.flatnonzero(self.test_targets > 0)

    def test_histories(self) -> list[list[int]]:
        """Return each user's history for the test step: training items plus the validation item."""
        return [
            seq + [int(valid)] if valid > 0 else list(seq)
            for seq, valid in zip(self.train, self.valid_targets)
        ]


@dataclass(frozen=True)
class SequenceDataset:
    """Per-user item sequences in time order, with the item map and a fingerprint."""

    name: str
    item_map: ItemMap
    user_ids: tuple[int | str, ...]
    sequences: tuple[tuple[int, ...], ...]
    fingerprint: str

    @property
    def num_items(self) -> int:
        """Number of real items in the catalogue."""
        return self.item_map.num_items

    @property
    def num_users(self) -> int:
        """Number of users."""
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        """Number of events over all users."""
        return sum(len(seq) for seq in self.sequences)

    def split(self) -> LeaveOneOutSplit:
        """Split every user's sequence leave-one-out by time."""
        train: list[list[int]] = []
        valid = np.zeros(len(self.sequences), dtype=np.int64)
        test = np.zeros(len(self.sequences), dtype=np.int64)
        skipped: list[int] = []
        for user, seq in enumerate(self.sequences):
            if len(seq) < 3:
                train.append(list(seq))
                skipped.append(user)
                continue
            train.append(list(seq[:-2]))
            valid[user] = seq[-2]
            test[user] = seq[-1]
        if skipped:
            logger.warning(
                "dataset %s: %d user(s) have fewer than 3 events and are left out of evaluation",
                self.name,
                len(skipped),
            )
        return LeaveOneOutSplit(train=train, valid_targets=valid, test_targets=test, skipped_users=skipped)


def _read_inter(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic ``.inter`` file, whose header names ``field:type`` columns."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    renamed = {}
    for column in frame.columns:
        base = column.split(":", 1)[0]
        renamed[column] = base
    return frame.rename(columns=renamed)


def _read_frame(path: Path, fmt: str, separator: str | None, column_names: Sequence[str] | None) -> pd.DataFrame:
    """Read the raw table of one interaction file, every column as text where the format allows."""
    if fmt in ("csv", "tsv", "txt"):
        return pd.read_csv(path, sep=separator or ("\t" if fmt == "tsv" else ","), dtype=str, keep_default_na=False)
    if fmt in ("parquet", "pq"):
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path.name} is not a readable Parquet file: {exc}") from None
    if fmt == "inter":
        return _read_inter(path)
    if fmt == "movielens":
        if separator is None or column_names is None:
            raise DataError("a movielens file needs its separator and column names")
        return pd.read_csv(
            path, sep=separator, header=None, names=list(column_names), dtype=str, engine="python" if len(separator) > 1 else "c"
        )
    raise DataError(f"unknown interaction file format {fmt!r} for {path}; use csv, parquet or inter")


def load_interactions(
    path: str | Path,
    *,
    file_format: str | None = None,
    user_col: str = USER,
    item_col: str = ITEM,
    time_col: str = TIME,
    rating_col: str | None = None,
    separator: str | None = None,
    column_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Load interactions from CSV, Parquet or a RecBole ``.inter`` file.

    Args:
        path: the file to read.
        file_format: ``csv``, ``parquet``, ``inter`` or ``movielens``; taken from
            the suffix when omitted.
        user_col, item_col, time_col, rating_col: source column names.
        separator: field separator of a headerless ``movielens`` file.
        column_names: column names of a headerless ``movielens`` file.

    Returns:
        A frame with columns ``user_id``, ``item_id``, ``timestamp`` (int64) and
        ``rating`` when present, in file order.

    Raises:
        DataError: a column is missing or a timestamp is not an integer.
        EmptyInputError: the file has no rows.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"interaction file {path} does not exist; check the path")
    if path.stat().st_size == 0:
        raise EmptyInputError(f"{path.name} is empty (0 bytes); it has no header and no interaction rows")
    fmt = (file_format or path.suffix.lstrip(".")).lower()

    try:
        frame = _read_frame(path, fmt, separator, column_names)
    except pd.errors.EmptyDataError:
        raise EmptyInputError(f"{path.name} has no header and no interaction rows") from None
    if fmt == "inter" and rating_col is None and RATING in frame.columns:
        rating_col = RATING

    missing = [col for col in (user_col, item_col, time_col) if col not in frame.columns]
    if rating_col is not None and rating_col not in frame.columns:
        missing.append(rating_col)
    if missing:
        raise DataError(
            f"{path.name}: missing column(s) {', '.join(missing)}; the file has {', '.join(map(str, frame.columns))}. "
            "Name the columns with the user, item and time column options."
        )
    if len(frame) == 0:
        raise EmptyInputError(f"{path.name} has no interaction rows")

    result = pd.DataFrame(
        {
            USER: frame[user_col].map(normalize_raw_id),
            ITEM: frame[item_col].map(normalize_raw_id),
            TIME: _parse_timestamps(frame[time_col], path.name),
        }
    )
    if rating_col is not None:
        result[RATING] = pd.to_numeric(frame[rating_col], errors="raise").astype(np.float64)
    return result.reset_index(drop=True)


def _parse_timestamps(column: pd.Series, source: str) -> pd.Series:
    """Parse a timestamp column into int64 without passing through float.

    Integral strings and integers are parsed exactly; ``"1.7e9"``-style values
    that are whole numbers are accepted; anything else is rejected with the row.
    """
    if pd.api.types.is_integer_dtype(column):
        return column.astype(np.int64)
    if pd.api.types.is_datetime64_any_dtype(column):
        if getattr(column.dt, "tz", None) is not None:
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        # NOTE: sub-second precision is dropped, so events within one second
        # become ties and keep their file order.
        return column.astype("datetime64[s]").astype(np.int64)
    values = np.empty(len(column), dtype=np.int64)
    for row, raw in enumerate(column.tolist()):
        text = str(raw).strip()
        try:
            values[row] = int(text)
            continue
        except ValueError:
            pass
        try:
            as_float = float(text)
        except ValueError:
            raise DataError(f"{source}: row {row + 1} has timestamp {raw!r}, which is not a number") from None
        if not as_float.is_integer():
            raise DataError(f"{source}: row {row + 1} has timestamp {raw!r}; timestamps must be whole seconds")
        values[row] = int(as_float)
    return pd.Series(values, index=column.index, dtype=np.int64)


def filter_interactions(frame: pd.DataFrame, *, min_rating: float | None = None, k_core: int | None = None) -> pd.DataFrame:
    """Keep events rated at least ``min_rating`` and then apply an iterative k-core filter.

    The k-core filter repeatedly drops users and items with fewer than ``k_core``
    events until none is left, so every kept user and item has at least that many.
    """
    if min_rating is not None:
        if RATING not in frame.columns:
            raise DataError("a rating threshold was given but the data has no rating column")
        frame = frame[frame[RATING] >= min_rating]
    if k_core is not None and k_core > 1:
        while True:
            user_counts = frame[USER].map(frame[USER].value_counts())
            item_counts = frame[ITEM].map(frame[ITEM].value_counts())
            keep = (user_counts >= k_core) & (item_counts >= k_core)
            if keep.all():
                break
            frame = frame[keep]
    if len(frame) == 0:
        raise EmptyInputError(f"no interactions remain after filtering (min_rating={min_rating}, k_core={k_core})")
    return frame


def build_dataset(frame: pd.DataFrame, *, name: str = "custom") -> SequenceDataset:
    """Order events per user, remap ids and return the dataset.

    Users are numbered by first appearance in the file, items by first
    appearance in the time-ordered data, so the result depends only on the file.
    """
    if len(frame) == 0:
        raise EmptyInputError("no interactions to build a dataset from")
    frame = frame.reset_index(drop=True)
    file_order = np.arange(len(frame), dtype=np.int64)
    user_codes, user_uniques = pd.factorize(frame[USER], sort=False)
    timestamps = frame[TIME].to_numpy(dtype=np.int64)

    # lexsort sorts by the last key first: user, then timestamp, then file order.
    order = np.lexsort((file_order, timestamps, user_codes))
    ordered_users = user_codes[order]
    item_codes, item_uniques = pd.factorize(frame[ITEM].to_numpy(dtype=object)[order], sort=False)
    internal_items = item_codes.astype(np.int64) + 1

    boundaries = np.flatnonzero(np.diff(ordered_users)) + 1
    sequences = tuple(tuple(int(x) for x in chunk) for chunk in np.split(internal_items, boundaries))
    user_ids = tuple(normalize_raw_id(user_uniques[int(chunk[0])]) for chunk in np.split(ordered_users, boundaries))
    item_map = ItemMap(tuple(normalize_raw_id(raw) for raw in item_uniques))
    fingerprint = fingerprint_sequences(user_ids, item_map, sequences)
    dataset = SequenceDataset(name=name, item_map=item_map, user_ids=user_ids, sequences=sequences, fingerprint=fingerprint)
    logger.info(
        "dataset %s: %d users, %d items, %d interactions, fingerprint %s",
        name,
        dataset.num_users,
        dataset.num_items,
        dataset.num_interactions,
        fingerprint[:12],
    )
    return dataset


def fingerprint_sequences(user_ids: Sequence, item_map: ItemMap, sequences: Sequence[Sequence[int]]) -> str:
    """Return a sha256 over users, raw item ids and ordered sequences."""
    digest = hashlib.sha256()
    for user, seq in zip(user_ids, sequences):
        digest.update(repr(user).encode())
        digest.update(b":")
        digest.update(",".join(repr(raw) for raw in item_map.to_raw(seq)).encode())
        digest.update(b"\n")
    return digest.hexdigest()
