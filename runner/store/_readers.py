"""Reading runs back: the manifest, the three Parquet files as polars LazyFrames, and finding runs.

Every reader raises `RunError` naming the path for a missing directory, a missing or corrupt
manifest, a missing or corrupt Parquet file, or columns that differ from `runner/schema.py`. A run
still `running` is refused unless the caller passes `allow_running=True`; it then reads what has
reached Parquet so far (a resumed run's earlier rows and the rolled parts, not the last few
thousand rows still in the journal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
)
from runner.store._layout import PARTS_DIR, part_path, safe_suite_name
from runner.store._manifest import RunCounts, read_manifest

__all__ = [
    "RunInfo",
    "find_runs",
    "latest_run",
    "open_run",
    "scan_hits",
    "scan_judgments",
    "scan_requests",
]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run directory and what its manifest says."""

    path: Path
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
    def requests_path(self) -> Path:
        return self.path / REQUESTS_FILE

    @property
    def hits_path(self) -> Path:
        return self.path / HITS_FILE

    @property
    def judgments_path(self) -> Path:
        return self.path / JUDGMENTS_FILE


def open_run(path: Path | str, *, allow_running: bool = False) -> RunInfo:
    """The run in directory `path` (or of the manifest file `path`).

    Raises `RunError` for a path that is not a readable run, and for a run still `running`
    unless `allow_running`.
    """
    path = Path(path)
    if path.name == MANIFEST_FILE:
        path = path.parent
    manifest = read_manifest(path)
    if manifest["status"] == "running" and not allow_running:
        raise RunError(
            f"{path}: run is still running (started {manifest['started_at']}); wait for it to "
            "finish, or resume it if its process died"
        )
    return RunInfo(
        path=path,
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
        counts=RunCounts.from_dict(manifest["counts"], where=path / MANIFEST_FILE),
        manifest=manifest,
    )


def scan_requests(run_dir: Path | str, *, allow_running: bool = False) -> pl.LazyFrame:
    """requests.parquet of a run: one row per page request (columns: `REQUESTS_SCHEMA`)."""
    return _scan(run_dir, REQUESTS_FILE, "requests", REQUESTS_SCHEMA, allow_running)


def scan_hits(run_dir: Path | str, *, allow_running: bool = False) -> pl.LazyFrame:
    """hits.parquet of a run: one row per preview, in rank order per request (`HITS_SCHEMA`)."""
    return _scan(run_dir, HITS_FILE, "hits", HITS_SCHEMA, allow_running)


def scan_judgments(run_dir: Path | str, *, allow_running: bool = False) -> pl.LazyFrame:
    """judgments.parquet of a run: the judgments copied in at its start (`JUDGMENTS_SCHEMA`)."""
    info = open_run(run_dir, allow_running=allow_running)
    path = info.judgments_path
    check_parquet(path, JUDGMENTS_SCHEMA)
    return pl.scan_parquet(path)


def find_runs(root: Path | str, suite: str | None = None) -> list[Path]:
    """The run directories under `root` (or under one `suite=<name>` directory), oldest first.

    A run directory is a `run_id=` directory holding a manifest; its status is not checked.
    Ordered by run date, then run id (ids from `new_run_id` sort by start time).
    Raises `RunError` if `root` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"{root}: no such directory")
    if root.name.startswith("suite="):
        pattern = "run_date=*/run_id=*/" + MANIFEST_FILE
    else:
        suite_part = f"suite={safe_suite_name(suite)}" if suite is not None else "suite=*"
        pattern = f"{suite_part}/run_date=*/run_id=*/{MANIFEST_FILE}"
    runs = [m.parent for m in root.glob(pattern)]
    return sorted(runs, key=lambda p: (p.parent.name, p.name, str(p)))


def latest_run(
    root: Path | str, suite: str | None = None, *, status: str | None = "complete"
) -> Path:
    """The newest run under `root` (of `suite`) whose status is `status` (None: any status).

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


def check_parquet(
    path: Path | str,
    schema: pa.Schema,
    *,
    filesystem: pafs.FileSystem | None = None,
    where: str | None = None,
) -> None:
    """Refuse a missing or corrupt Parquet file, or one whose columns differ from `schema`.

    `filesystem` reads a file on object storage; `where` names it in errors (default: `path`).
    """
    shown = where if where is not None else str(path)
    try:
        found = pq.read_schema(path, filesystem=filesystem)
    except FileNotFoundError:
        raise RunError(f"{shown}: missing") from None
    except (OSError, pa.ArrowException) as exc:
        text = " ".join(str(exc).split())[:300]
        raise RunError(f"{shown}: corrupt Parquet file ({text})") from None
    wrong = [
        f.name
        for f in schema
        if f.name not in found.names or not found.field(f.name).type.equals(f.type)
    ]
    if wrong:
        raise RunError(f"{shown}: columns {wrong} are missing or differ from runner/schema.py")


def _scan(
    run_dir: Path | str, file: str, table: str, schema: pa.Schema, allow_running: bool
) -> pl.LazyFrame:
    info = open_run(run_dir, allow_running=allow_running)
    if info.status != "running":
        paths = [info.path / file]
    else:
        paths = [p for p in [info.path / file] if p.exists()]
        for hits in sorted((info.path / PARTS_DIR).glob("*-hits.parquet")):
            seq = int(hits.name.split("-")[0])  # a hits part's presence commits its pair
            paths.append(part_path(info.path, seq, table))
        if not paths:
            return pl.from_arrow(schema.empty_table()).lazy()  # type: ignore[union-attr]
    for path in paths:
        check_parquet(path, schema)
    return pl.scan_parquet(paths)
