"""Tests for loading, ordering, id remapping, filtering and the leave-one-out split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rsir_engine.data import build_dataset, filter_interactions, load_interactions
from rsir_engine.errors import DataError, EmptyInputError
from rsir_engine.training import evaluate_validation

T0 = 1_700_000_000  # seconds; float32 values near here are 128 s apart
T1 = T0 + 50


def frame_of(rows: list[tuple[object, object, int]]) -> pd.DataFrame:
    """Build an interaction frame from ``(user, item, timestamp)`` rows."""
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def write_close_events(path: Path, file_format: str) -> None:
    """Write two events 50 s apart, the later one first in the file."""
    rows = [("u", "late", T1), ("u", "early", T0)]
    if file_format == "csv":
        frame_of(rows).to_csv(path, index=False)
    elif file_format == "parquet":
        frame_of(rows).astype({"timestamp": "int64"}).to_parquet(path, index=False)
    else:
        # RecBole writes float timestamps; a whole number like 1700000050.0 must parse exactly.
        path.write_text(
            "user_id:token\titem_id:token\ttimestamp:float\n"
            f"u\tlate\t{T1}.0\n"
            f"u\tearly\t{T0}\n"
        )


def test_timestamps_close_events_collapse_in_float32() -> None:
    assert np.float32(T0) == np.float32(T1)


@pytest.mark.parametrize("file_format", ["csv", "parquet", "inter"])
def test_load_interactions_keeps_int64_timestamps(tmp_path: Path, file_format: str) -> None:
    path = tmp_path / f"events.{file_format}"
    write_close_events(path, file_format)

    frame = load_interactions(path)

    assert frame["timestamp"].dtype == np.int64
    assert frame["timestamp"].tolist() == [T1, T0]


@pytest.mark.parametrize(
    "timezone",
    [None, "UTC"],
)
def test_load_interactions_parquet_datetimes_to_seconds(tmp_path: Path, timezone: str | None) -> None:
    times = pd.to_datetime([T1, T0], unit="s")
    if timezone is not None:
        times = times.tz_localize(timezone)
    path = tmp_path / "datetimes.parquet"
    pd.DataFrame({"user_id": ["u", "u"], "item_id": [1, 2], "timestamp": times}).to_parquet(path, index=False)

    frame = load_interactions(path)

    assert frame["timestamp"].dtype == np.int64
    assert frame["timestamp"].tolist() == [T1, T0]


@pytest.mark.parametrize("file_format", ["csv", "parquet", "inter"])
def test_build_dataset_orders_close_events(tmp_path: Path, file_format: str) -> None:
    path = tmp_path / f"events.{file_format}"
    write_close_events(path, file_format)

    dataset = build_dataset(load_interactions(path))

    assert dataset.item_map.to_raw(dataset.sequences[0]) == ["early", "late"]


def test_build_dataset_ties_keep_file_order() -> None:
    frame = frame_of(
        [
            ("a", "x3", T0 + 10),
            ("a", "x1", T0),
            ("b", "y1", T0),
            ("a", "x2a", T0 + 5),
            ("b", "y2", T0),
            ("a", "x2b", T0 + 5),
            ("a", "x2c", T0 + 5),
        ]
    )

    dataset = build_dataset(frame)

    assert dataset.user_ids == ("a", "b")
    assert dataset.item_map.to_raw(dataset.sequences[0]) == ["x1", "x2a", "x2b", "x2c", "x3"]
    assert dataset.item_map.to_raw(dataset.sequences[1]) == ["y1", "y2"]


def test_build_dataset_raw_item_zero_is_ordinary() -> None:
    frame = frame_of([("u", 0, T0), ("u", 5, T0 + 1), ("v", 5, T0), ("v", 0, T0 + 1)])

    dataset = build_dataset(frame)
    internal, unknown = dataset.item_map.to_internal([0, "0"])

    assert dataset.num_items == 2
    assert internal[0] >= 1
    assert internal == [internal[0], internal[0]]
    assert unknown == []
    assert dataset.item_map.to_raw(internal[:1]) == [0]
    assert all(item >= 1 for seq in dataset.sequences for item in seq)


def test_item_map_to_raw_rejects_padding() -> None:
    dataset = build_dataset(frame_of([("u", "first", T0), ("u", "last", T0 + 1)]))

    with pytest.raises(DataError):
        dataset.item_map.to_raw([0])


def test_load_interactions_raw_item_zero_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "zero.csv"
    frame_of([("u", 0, T0), ("u", 1, T0 + 1)]).to_csv(path, index=False)

    dataset = build_dataset(load_interactions(path))

    assert dataset.item_map.raw_ids == (0, 1)
    assert dataset.sequences == ((1, 2),)


def test_filter_interactions_min_rating(tmp_path: Path) -> None:
    path = tmp_path / "rated.csv"
    pd.DataFrame(
        {"user_id": ["u", "u", "u"], "item_id": [1, 2, 3], "timestamp": [T0, T0 + 1, T0 + 2], "rating": [5, 3, 4]}
    ).to_csv(path, index=False)

    frame = filter_interactions(load_interactions(path, rating_col="rating"), min_rating=4)

    assert frame["item_id"].tolist() == [1, 3]


def test_filter_interactions_min_rating_without_column() -> None:
    with pytest.raises(DataError, match="rating"):
        filter_interactions(frame_of([("u", 1, T0)]), min_rating=4)


def test_filter_interactions_k_core_cascades() -> None:
    # u3 has one event; dropping it leaves item "c" with one event, which then
    # leaves u2 with one event, so u2 and "c" go too.
    rows = [
        ("u1", "a", T0), ("u1", "b", T0 + 1),
        ("u4", "a", T0), ("u4", "b", T0 + 1),
        ("u2", "c", T0), ("u2", "a", T0 + 1),
        ("u3", "c", T0),
    ]  # fmt: skip

    kept = filter_interactions(frame_of(rows), k_core=2)

    assert sorted(set(kept["user_id"])) == ["u1", "u4"]
    assert sorted(set(kept["item_id"])) == ["a", "b"]
    assert kept["user_id"].value_counts().min() >= 2
    assert kept["item_id"].value_counts().min() >= 2


def test_filter_interactions_k_core_removes_all() -> None:
    with pytest.raises(EmptyInputError):
        filter_interactions(frame_of([("u", "a", T0), ("v", "b", T0)]), k_core=2)


def test_split_leave_one_out_targets() -> None:
    dataset = build_dataset(frame_of([("u", item, T0 + item) for item in (10, 20, 30, 40)]))

    split = dataset.split()

    assert dataset.item_map.to_raw(split.train[0]) == [10, 20]
    assert dataset.item_map.to_raw([split.valid_targets[0]]) == [30]
    assert dataset.item_map.to_raw([split.test_targets[0]]) == [40]
    assert dataset.item_map.to_raw(split.test_histories()[0]) == [10, 20, 30]


def test_split_short_users_skipped(caplog: pytest.LogCaptureFixture) -> None:
    rows = [("long", item, T0 + item) for item in (1, 2, 3)] + [("two", 1, T0), ("two", 2, T0 + 1), ("one", 3, T0)]
    dataset = build_dataset(frame_of(rows), name="short")

    with caplog.at_level(logging.WARNING, logger="rsir_engine.data"):
        split = dataset.split()

    assert split.skipped_users == [1, 2]
    assert split.eval_users.tolist() == [0]
    assert split.train[1] == list(dataset.sequences[1])
    assert split.valid_targets[1:].tolist() == [0, 0]
    assert split.test_targets[1:].tolist() == [0, 0]
    assert "2 user(s) have fewer than 3 events" in caplog.text


def test_split_short_users_still_evaluate(make_table_scorer, cyclic_rows_factory) -> None:
    rows = cyclic_rows_factory(num_users=4, num_items=6, length=5) + [("short", 1, T0)]
    dataset = build_dataset(frame_of(rows))
    split = dataset.split()

    result = evaluate_validation(make_table_scorer(dataset.num_items, {}), split)

    assert len(result.ranks) == 4
    assert 4 not in result.users.tolist()


def test_load_interactions_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "no_time.csv"
    pd.DataFrame({"user_id": ["u"], "item_id": [1], "when": [T0]}).to_csv(path, index=False)

    with pytest.raises(DataError, match="missing column.*timestamp"):
        load_interactions(path)


def test_load_interactions_custom_columns(tmp_path: Path) -> None:
    path = tmp_path / "custom.csv"
    pd.DataFrame({"uid": ["u"], "iid": [7], "when": [T0]}).to_csv(path, index=False)

    frame = load_interactions(path, user_col="uid", item_col="iid", time_col="when")

    assert frame.to_dict("records") == [{"user_id": "u", "item_id": 7, "timestamp": T0}]


@pytest.mark.parametrize("bad", ["yesterday", "1700000000.5"])
def test_load_interactions_bad_timestamp_names_row(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "bad_time.csv"
    path.write_text(f"user_id,item_id,timestamp\nu,1,{T0}\nu,2,{bad}\n")

    with pytest.raises(DataError, match="row 2") as caught:
        load_interactions(path)

    assert bad in str(caught.value)


def test_load_interactions_header_only_empty(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("user_id,item_id,timestamp\n")

    with pytest.raises(EmptyInputError):
        load_interactions(path)


def test_load_interactions_parquet_without_rows_empty(tmp_path: Path) -> None:
    path = tmp_path / "no_rows.parquet"
    frame_of([("u", 1, T0)]).iloc[:0].to_parquet(path, index=False)

    with pytest.raises(EmptyInputError):
        load_interactions(path)


@pytest.mark.parametrize("suffix", ["csv", "inter", "parquet"])
def test_load_interactions_zero_byte_file_empty(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty.{suffix}"
    path.write_bytes(b"")

    with pytest.raises(EmptyInputError):
        load_interactions(path)


def test_load_interactions_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_interactions(tmp_path / "absent.csv")
