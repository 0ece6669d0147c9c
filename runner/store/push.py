"""Copy a finished run to another place (a bucket, or another disk), keeping its hive layout.

    push_run("reports/suite=demo/run_date=2024-11-24/run_id=0200", "s3://nightly/vlbench")

Runs keep their hive layout on the bucket (`<prefix>/suite=<name>/run_date=<date>/run_id=<id>/`),
so `vlbench export`, `report` and `history` read them in place, and so do DuckDB, Spark or Trino.
The suite's judgments log travels along, to `<prefix>/suite=<name>/_judgments/`, and the labels
found there come back (`labels_log`).
Each file is written whole through `atomic_write` (object stores show an object once its upload
completes; a local destination gets a temp name and a rename), the manifest LAST: a reader that
finds a run's manifest finds all of its files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.fs as pafs

from runner.errors import RunError
from runner.schema import MANIFEST_FILE
from runner.store.atomic import atomic_write
from runner.store.labels_log import suite_log, sync_log
from runner.store.location import Location, resolve, scrub
from runner.store.reader import RunRef, hive_rel, open_run, read_manifest, scan_table

__all__ = ["PushResult", "push_run"]

_COPY_CHUNK: Final = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PushResult:
    """Where a pushed run now lives, and what was copied."""

    uri: str
    files: tuple[str, ...]
    bytes: int
    labels: int = 0  # lines of the suite's judgments log the destination did not have yet
    labels_received: int = 0  # lines of the destination's log the local one did not have


def push_run(
    run: RunRef,
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    environ: Mapping[str, str] | None = None,
) -> PushResult:
    """Copy the finished run `run` (a path or a URI) to the root `dest` (a path or a URI).

    The run lands at `dest/suite=<name>/run_date=<date>/run_id=<id>/`. Every top-level file of
    the run is copied (Parquet, manifest, metrics, reports; never `_journal`/`_parts` or hidden
    temp files), the manifest last. A run still `running`, one whose Parquet files are missing or
    corrupt, one already at `dest` (unless `overwrite`), or a `dest` whose bucket does not exist,
    is refused with `RunError`; nothing is written then. After the manifest, the suite's
    judgments log and the one at `dest` each gain the lines the other has (`labels_log`; the
    local one only when the run is local).
    """
    info = open_run(run)  # refuses a running run, names a missing one
    for table in ("requests", "hits", "judgments"):  # a corrupt run is refused before any copy
        scan_table(info, table)
    target = resolve(dest, environ=environ).child(hive_rel(info))
    _refuse_a_missing_bucket(target)
    if target.child(MANIFEST_FILE).exists() and not overwrite:
        raise RunError(f"{target.uri}: a run is already there (pass --overwrite to replace it)")
    source = info.location
    names = sorted(
        entry.base_name
        for entry in source.fs.get_file_info(pafs.FileSelector(source.path))
        if entry.type == pafs.FileType.File
        and not entry.base_name.startswith((".", "_"))
        and entry.base_name != MANIFEST_FILE
    )
    names.append(MANIFEST_FILE)
    read_manifest(source)  # the manifest we copy last must still be a good one
    if not target.remote:
        target.fs.create_dir(target.path, recursive=True)
    total = sum(_copy(source.child(name), target.child(name)) for name in names)
    local_log, shared_log = suite_log(source), suite_log(target)
    sent = sync_log(local_log, shared_log)
    # Both ways from a local run: labels given on other machines (`vlbench judge` of a run on
    # the bucket) come down, so that this machine's next report counts them too.
    received = 0 if source.remote else sync_log(shared_log, local_log)
    return PushResult(target.uri, tuple(names), total, sent, received)


def _refuse_a_missing_bucket(target: Location) -> None:
    """A `RunError` naming the bucket if the store says it does not exist.

    Without this, the first upload fails with the store's "no such file or directory". An error
    asking (a key allowed one prefix only) is left to the writes to report.
    """
    if not target.remote:
        return
    bucket = target.path.split("/", 1)[0]
    try:
        missing = target.fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except (OSError, pa.ArrowException):
        return
    if missing:
        scheme = target.uri.split("://", 1)[0]
        raise RunError(f"{scheme}://{bucket}: no such bucket (push does not create buckets)")


def _copy(source: Location, target: Location) -> int:
    """Copy one file in chunks through the one atomic write; returns its size."""
    copied = 0
    try:
        with source.fs.open_input_stream(source.path) as src, atomic_write(target) as out:
            while chunk := src.read(_COPY_CHUNK):
                out.write(chunk)
                copied += len(chunk)
    except (OSError, pa.ArrowException) as exc:
        raise RunError(f"{source.uri}: cannot be read ({scrub(str(exc))})") from None
    return copied
