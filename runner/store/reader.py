"""The one reader of a run, wherever it is: a local path, `s3://…` or `gs://…` (see `location`).

    info = open_run("s3://nightly/vlbench/suite=demo/run_date=2024-11-24/run_id=0200")
    hits = scan_hits(info)               # a polars LazyFrame; remote files are read in batches
    runs = find_run_locations("reports/suite=demo")          # oldest first, any location

Every command that takes a run (report, compare, judge-todo, export, history, merge, push) goes
through here, so a run on a bucket and a run on disk are refused for the same reasons with the
same words: a missing directory, a missing or corrupt manifest, a missing or corrupt Parquet
file, or columns that differ from `runner/schema.py` raise `RunError` naming the place; a file
written before an optional column existed (`runner.schema.OPTIONAL_COLUMNS`) is read with that
column as nulls, so every reader sees the columns of today's schema. A run
still `running` is refused unless the caller passes `allow_running=True`; locally it then reads
what has reached Parquet so far (a resumed run's earlier rows and the rolled parts, not the last
rows still in the journal), without the old rows of keys a retry withdrew (`_retry`).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from runner.errors import RunError
from runner.schema import (
    HITS_FILE,
    HITS_SCHEMA,
    JUDGMENTS_FILE,
    JUDGMENTS_SCHEMA,
    MANIFEST_FILE,
    REQUESTS_FILE,
    REQUESTS_SCHEMA,
    missing_columns,
)
from runner.store import _manifest
from runner.store._layout import PARTS_DIR, part_path, run_dir_for, safe_suite_name
from runner.store._manifest import RunCounts, parse_manifest
from runner.store._retry import BASE_SEQ, Withdrawn
from runner.store.location import Location, resolve, scrub

__all__ = [
    "RunInfo",
    "RunRef",
    "Table",
    "check_parquet",
    "find_run_locations",
    "find_runs",
    "hive_rel",
    "latest_run",
    "local_dir",
    "open_run",
    "read_manifest",
    "run_location",
    "scan_hits",
    "scan_judgments",
    "scan_requests",
    "scan_table",
]

Table = Literal["hits", "requests", "judgments"]
_TABLES: Final[Mapping[str, tuple[str, pa.Schema]]] = {
    "hits": (HITS_FILE, HITS_SCHEMA),
    "requests": (REQUESTS_FILE, REQUESTS_SCHEMA),
    "judgments": (JUDGMENTS_FILE, JUDGMENTS_SCHEMA),
}
_HIVE_RUN: Final = re.compile(r"(?:^|/)(suite=[^/]+)/(run_date=[^/]+)/(run_id=[^/]+)/?$")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run and what its manifest says; `location` says where it is, `uri` how to name it."""

    location: Location
    run_id: str
    suite_name: str
    suite_hash: str
    status: str
    started_at: str
    ended_at: str | None
    base_url: str | None
    dataset_id: str | None
    tool_version: str | None
    shard: str | None
    counts: RunCounts
    manifest: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def uri(self) -> str:
        return self.location.uri

    @property
    def path(self) -> Path:
        """The local directory of the run; `RunError` for a run on object storage."""
        if self.location.remote:
            raise RunError(f"{self.uri}: on object storage; this needs a local run directory")
        return Path(self.location.path)

    @property
    def requests_path(self) -> Path:
        return self.path / REQUESTS_FILE

    @property
    def hits_path(self) -> Path:
        return self.path / HITS_FILE

    @property
    def judgments_path(self) -> Path:
        return self.path / JUDGMENTS_FILE


# What every reader takes: a path, a URI, a Location, or a run already opened.
RunRef = str | os.PathLike[str] | Location | RunInfo


def run_location(run: RunRef) -> Location:
    """Where `run` is (a path or URI of the run directory, or of its manifest file)."""
    if isinstance(run, RunInfo):
        return run.location
    loc = run if isinstance(run, Location) else resolve(run)
    if loc.path.rstrip("/").endswith("/" + MANIFEST_FILE):
        parent_path, parent_uri = loc.path.rsplit("/", 1)[0], loc.uri.rsplit("/", 1)[0]
        loc = Location(loc.fs, parent_path, parent_uri or ".")
    return loc


def read_manifest(run: RunRef) -> dict[str, Any]:
    """The manifest of `run`, checked for the keys every reader relies on (any status).

    Raises `RunError` naming the place for a missing directory, a directory with no manifest
    (not a run), a manifest that is not JSON, or one missing a required key.
    """
    if isinstance(run, RunInfo):
        return dict(run.manifest)
    loc = run_location(run)
    if not loc.remote:
        try:
            return _manifest.read_manifest(loc.path)
        except RunError as exc:  # name the run as the user gave it
            raise RunError(str(exc).replace(loc.path, loc.uri, 1)) from None
    if not loc.exists():
        raise RunError(f"{loc.uri}: no such run directory")
    manifest = loc.child(MANIFEST_FILE)
    if not manifest.is_file():
        raise RunError(f"{loc.uri}: not a run directory (no {MANIFEST_FILE})")
    return parse_manifest(manifest.read_bytes(), where=manifest.uri)


def open_run(run: RunRef, *, allow_running: bool = False) -> RunInfo:
    """The run at `run` (its directory, its manifest file, or a URI of either).

    Raises `RunError` for a place that is not a readable run, and for a run still `running`
    unless `allow_running`.
    """
    if isinstance(run, RunInfo):
        info = run
    else:
        loc = run_location(run)
        manifest = read_manifest(loc)
        info = RunInfo(
            location=loc,
            run_id=str(manifest["run_id"]),
            suite_name=str(manifest["suite_name"]),
            suite_hash=str(manifest["suite_hash"]),
            status=str(manifest["status"]),
            started_at=str(manifest["started_at"]),
            ended_at=manifest.get("ended_at"),
            base_url=manifest.get("base_url"),
            dataset_id=manifest.get("dataset_id"),
            tool_version=manifest.get("tool_version"),
            shard=manifest.get("shard"),
            counts=RunCounts.from_dict(manifest["counts"], where=loc.child(MANIFEST_FILE).uri),
            manifest=manifest,
        )
    if info.status == "running" and not allow_running:
        raise RunError(
            f"{info.uri}: run is still running (started {info.started_at}); wait for it to "
            "finish, or resume it if its process died"
        )
    return info


def scan_requests(run: RunRef, *, allow_running: bool = False) -> pl.LazyFrame:
    """requests.parquet of a run: one row per page request (columns: `REQUESTS_SCHEMA`)."""
    return scan_table(run, "requests", allow_running=allow_running)


def scan_hits(run: RunRef, *, allow_running: bool = False) -> pl.LazyFrame:
    """hits.parquet of a run: one row per preview, in rank order per request (`HITS_SCHEMA`)."""
    return scan_table(run, "hits", allow_running=allow_running)


def scan_judgments(run: RunRef, *, allow_running: bool = False) -> pl.LazyFrame:
    """judgments.parquet of a run: the judgments copied in at its start (`JUDGMENTS_SCHEMA`)."""
    return scan_table(run, "judgments", allow_running=allow_running)


def scan_table(run: RunRef, table: Table, *, allow_running: bool = False) -> pl.LazyFrame:
    """One Parquet file of a run (`hits`, `requests`, `judgments`) as a LazyFrame, checked first.

    Local files are scanned by polars; remote ones through a `pyarrow.dataset` read in record
    batches (nothing is downloaded whole).
    """
    info = open_run(run, allow_running=allow_running)
    file, schema = _TABLES[table]
    loc = info.location
    if loc.remote:
        import pyarrow.dataset as ds  # imports pandas (0.3 s): only for a run on object storage

        target = loc.child(file)
        check_parquet(target, schema)
        # Given the schema, the dataset reads an older file's missing optional columns as nulls.
        found = ds.dataset(target.path, filesystem=loc.fs, format="parquet", schema=schema)
        return pl.scan_pyarrow_dataset(found)
    paths, seqs = [info.path / file], [BASE_SEQ]
    withdrawn = Withdrawn()
    if info.status == "running":
        if not paths[0].exists():  # no finish yet
            paths, seqs = [], []
        if table != "judgments":
            withdrawn = Withdrawn.of(info.manifest, where=info.uri)  # a retry under way
            for hits in sorted((info.path / PARTS_DIR).glob("*-hits.parquet")):
                seq = int(hits.name.split("-")[0])  # a hits part's presence commits its pair
                paths.append(part_path(info.path, seq, table))
                seqs.append(seq)
        if not paths:
            return pl.from_arrow(schema.empty_table()).lazy()  # type: ignore[union-attr]
    absent = [check_parquet(_named(loc, path), schema) for path in paths]
    if not any(absent) and not withdrawn:
        return pl.scan_parquet(paths)
    # An older run (or an older run resumed by a newer version): each file as today's schema.
    types = pl.from_arrow(schema.empty_table()).schema  # type: ignore[union-attr]
    frames = [_with_nulls(pl.scan_parquet(p), a, types) for p, a in zip(paths, absent, strict=True)]
    frames = [_without(f, withdrawn.void_in(seq)) for f, seq in zip(frames, seqs, strict=True)]
    return pl.concat(frames)


def _without(frame: pl.LazyFrame, keys: frozenset[str]) -> pl.LazyFrame:
    """`frame` without the rows of withdrawn `keys` (rows a retry under way replaces)."""
    return frame.filter(~pl.col("request_key").is_in(sorted(keys))) if keys else frame


def _with_nulls(frame: pl.LazyFrame, absent: list[str], types: pl.Schema) -> pl.LazyFrame:
    """`frame` with the optional columns it lacks, as typed nulls, in the schema's order."""
    if not absent:
        return frame
    added = frame.with_columns(pl.lit(None, dtype=types[name]).alias(name) for name in absent)
    return added.select(types.names())


def _named(loc: Location, path: Path) -> Location:
    """A Location for `path` inside the local run `loc`, named the way the user named the run."""
    rel = path.relative_to(loc.path).as_posix()
    return loc.child(rel)


def check_parquet(target: Location | Path | str, schema: pa.Schema) -> list[str]:
    """Refuse a missing or corrupt Parquet file, or one whose columns differ from `schema`.

    Returns the optional columns of `schema` the file lacks (an older file: read them as nulls).
    """
    loc = target if isinstance(target, Location) else resolve(target)
    try:
        found = pq.read_schema(loc.path, filesystem=loc.fs)
    except FileNotFoundError:
        raise RunError(f"{loc.uri}: missing") from None
    except (OSError, pa.ArrowException) as exc:
        # Object-store errors may quote request signatures: scrubbed.
        raise RunError(f"{loc.uri}: corrupt Parquet file ({scrub(str(exc))})") from None
    wrong, absent = missing_columns(found, schema)
    if wrong:
        raise RunError(f"{loc.uri}: columns {wrong} are missing or differ from runner/schema.py")
    return absent


# -- finding runs -------------------------------------------------------------------------------


def find_run_locations(root: RunRef, suite: str | None = None) -> list[Location]:
    """The runs under `root` (a root, or one `suite=<name>` directory), oldest first.

    A run is a `suite=*/run_date=*/run_id=*/` directory holding a manifest; its status is not
    checked. Ordered by run date, then run id (ids from `new_run_id` sort by start time).
    Raises `RunError` if `root` is not there.
    """
    loc = run_location(root)
    info = loc.fs.get_file_info(loc.path)
    if info.type != pafs.FileType.Directory:
        # Object stores have no directories: a prefix "exists" when something is below it.
        if not loc.remote or not loc.fs.get_file_info(pafs.FileSelector(loc.path, True, False)):
            raise RunError(f"{loc.uri}: no such directory")
    base = loc.path.rstrip("/")
    wanted = f"suite={safe_suite_name(suite)}" if suite is not None else None
    runs = []
    for entry in loc.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if not entry.path.endswith("/" + MANIFEST_FILE):
            continue
        run_path = entry.path[: -len(MANIFEST_FILE) - 1]
        match = _HIVE_RUN.search(run_path)
        if match is None or not run_path.startswith(base):
            continue
        rel = run_path[len(base) :].strip("/")
        depth = rel.count("/") + 1
        if depth == 3 and wanted is not None and match.group(1) != wanted:
            continue
        if depth in (2, 3):  # below a suite directory, or below a root
            runs.append(loc.child(rel))
    return sorted(runs, key=lambda r: (r.path.split("/")[-2], r.path.split("/")[-1], r.path))


def find_runs(root: Path | str, suite: str | None = None) -> list[Path]:
    """`find_run_locations` for a local root: the run directories as paths below `root`."""
    loc = run_location(root)
    if loc.remote:
        raise RunError(f"{loc.uri}: a local directory is needed here")
    return [Path(run.uri) for run in find_run_locations(loc, suite)]  # below root, as given


def latest_run(
    root: Path | str, suite: str | None = None, *, status: str | None = "complete"
) -> Path:
    """The newest run under the local `root` (of `suite`) whose status is `status` (None: any).

    Runs whose manifest cannot be read are passed over. Raises `RunError` if there is none.
    """
    for run in reversed(find_runs(root, suite)):
        if status is None:
            return run
        try:
            if read_manifest(run)["status"] == status:
                return run
        except RunError:
            continue
    what = f"{status} run" if status else "run"
    of = f" of suite {suite!r}" if suite is not None else ""
    raise RunError(f"{root}: no {what}{of}")


def hive_rel(info: RunInfo) -> str:
    """`suite=<s>/run_date=<d>/run_id=<id>` of a run: its own folders, else from its manifest."""
    match = _HIVE_RUN.search(info.location.path)
    if match is not None:
        return "/".join(match.groups())
    date = dt.date.fromisoformat(info.started_at[:10])
    return run_dir_for(".", info.suite_name, date, info.run_id).as_posix()


def local_dir(info: RunInfo, root: Path | str = "reports") -> Path:
    """Where files made from `info` go on this machine: the run itself when it is local, else
    `root/suite=…/run_date=…/run_id=…/` (object storage is read in place, never written by
    report, compare or judge-todo; `vlbench push` copies a local run up)."""
    return info.path if not info.location.remote else Path(root) / hive_rel(info)
