"""The on-disk steps of `RunWriter`'s protocol (see `_writer`): Parquet parts, finalising, locking.

Every function here leaves the run directory in a state that `RunWriter.resume` can repair: files
are written under temp names and renamed, a part pair is committed by its hits part's name, and a
finish is committed by `_finalise.json`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import RunError
from runner.schema import (
    HITS_FILE,
    HITS_SCHEMA,
    REQUESTS_FILE,
    REQUESTS_SCHEMA,
    conform,
    missing_columns,
)
from runner.store._journal import Unit, read_segment
from runner.store._layout import (
    FINALISE_FILE,
    JOURNAL_DIR,
    LOCK_FILE,
    PARTS_DIR,
    part_path,
)
from runner.store._manifest import write_manifest
from runner.store.atomic import atomic_path, fsync_dir
from runner.store.atomic import fsync_file as fsync_file  # looked up here: tests fail it

__all__ = [
    "TABLES",
    "committed_parts",
    "delete_temps",
    "lock",
    "parquet_file",
    "read_units",
    "roll_forward",
    "row_groups",
    "write_parquet_atomic",
    "write_part",
]

COMPRESSION: Final = "zstd"
# (name in part files, final file, schema) of the two tables a unit writes to.
TABLES: Final = (("requests", REQUESTS_FILE, REQUESTS_SCHEMA), ("hits", HITS_FILE, HITS_SCHEMA))


def lock(run_dir: Path) -> int:
    """Hold `_journal/LOCK` for as long as the process writes the run (released when it dies)."""
    path = run_dir / JOURNAL_DIR / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunError(f"{run_dir}: run is being written by another process") from None
    return fd


def parquet_file(path: Path, schema: pa.Schema) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, pa.ArrowException) as exc:
        raise RunError(f"{path}: corrupt Parquet file ({exc})") from None
    found = pf.schema_arrow
    wrong, _ = missing_columns(found, schema)  # an older file may lack an optional column
    if wrong or len(found) > len(schema):
        raise RunError(f"{path}: columns differ from runner/schema.py")
    return pf


def row_groups(path: Path, schema: pa.Schema) -> Iterator[pa.Table]:
    """The row groups of a file, as `schema` (an older file's missing optional columns as nulls)."""
    # One thread, no read-ahead: streaming a run's parts into its final files on Arrow's thread
    # pools left ~30 MB more resident at the finish of a large run (bench/bench_memory.py).
    pf = pq.ParquetFile(path, pre_buffer=False)
    for i in range(pf.num_row_groups):
        yield conform(pf.read_row_group(i, use_threads=False), schema)


def write_parquet_atomic(
    path: Path,
    sources: Iterable[pa.RecordBatch | pa.Table],
    schema: pa.Schema,
    *,
    rename: bool = True,
) -> None:
    """Stream `sources` into a Parquet file, one row group per source, fsynced.

    With `rename`, the file is written under a temp name and renamed over `path`; without, it is
    written to `path` itself (the caller passed a temp name).
    """
    if rename:
        with atomic_path(path) as tmp:
            _write_parquet(tmp, sources, schema)
        return
    try:
        _write_parquet(path, sources, schema)
        fsync_file(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _write_parquet(
    path: Path, sources: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema
) -> None:
    with pq.ParquetWriter(path, schema, compression=COMPRESSION) as out:
        for source in sources:
            if source.num_rows:
                out.write(source, row_group_size=max(source.num_rows, 1))


def write_part(
    run_dir: Path, seq: int, requests: Sequence[pa.RecordBatch], hits: Sequence[pa.RecordBatch]
) -> None:
    """Write part pair `seq`; the hits part is renamed last, so its presence commits the pair."""
    # One row group each; the writer takes the batches as they are (no combining copy).
    req_table = pa.Table.from_batches(requests, REQUESTS_SCHEMA)
    hit_table = pa.Table.from_batches(hits, HITS_SCHEMA)
    write_parquet_atomic(part_path(run_dir, seq, "requests"), [req_table], REQUESTS_SCHEMA)
    write_parquet_atomic(part_path(run_dir, seq, "hits"), [hit_table], HITS_SCHEMA)


def committed_parts(run_dir: Path) -> list[int]:
    """Seqs of committed part pairs; a requests part whose hits part is missing is deleted."""
    committed = []
    for req in sorted((run_dir / PARTS_DIR).glob("*-requests.parquet")):
        seq = int(req.name.split("-")[0])
        if part_path(run_dir, seq, "hits").exists():
            committed.append(seq)
        else:
            req.unlink()
    for hits in (run_dir / PARTS_DIR).glob("*-hits.parquet"):
        if int(hits.name.split("-")[0]) not in committed:
            raise RunError(f"{hits}: hits part without its requests part")
    return committed


def read_units(segment: Path) -> tuple[list[Unit], int]:
    units, good = [], 0
    for end, unit in read_segment(segment):
        units.append(unit)
        good = end
    return units, good


def delete_temps(run_dir: Path) -> None:
    for folder in (run_dir, run_dir / PARTS_DIR):
        for tmp in folder.glob(".*.tmp-*"):
            tmp.unlink()


def roll_forward(run_dir: Path) -> bool:
    """Complete a finish whose `_finalise.json` was written (idempotent: any step may be done)."""
    plan_path = run_dir / FINALISE_FILE
    try:
        plan = orjson.loads(plan_path.read_bytes())
    except FileNotFoundError:
        return False
    except orjson.JSONDecodeError as exc:
        raise RunError(f"{plan_path}: corrupt ({exc})") from None
    for name, file, _ in TABLES:
        tmp = run_dir / plan["temps"][name]
        if tmp.exists():  # else it was renamed already
            os.replace(tmp, run_dir / file)
    fsync_dir(run_dir)
    shutil.rmtree(run_dir / PARTS_DIR, ignore_errors=True)
    for segment in (run_dir / JOURNAL_DIR).glob("*.vlj"):
        segment.unlink()
    write_manifest(run_dir, plan["manifest"])
    plan_path.unlink()
    fsync_dir(run_dir)
    return True
