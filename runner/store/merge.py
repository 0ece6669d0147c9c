"""Join the run directories of `--shard k/N` workers into one run, as if one worker had run it.

    result = merge_runs([shard1_dir, shard2_dir], "reports")
    result.run_dir   # reports/suite=<name>/run_date=<first start>/run_id=<new id>/

What is checked first (else `RunError` naming the run and the problem, and nothing is written):
every directory is a finished run with status `complete` and a shard label "k/N"; all share one
suite hash (the same suite), suite name, dataset and N; no shard appears twice and shards 1..N
are all there; their judgments are the same.

What the merged run holds, in a CANONICAL ORDER (so that two merges of the same shards, or a
merge and an unsharded run of the same suite sorted the same way, are identical row for row):
- `requests.parquet`: every shard's request rows, sorted by (request_key, page);
- `hits.parquet`: every shard's hit rows, sorted by (request_key, rank);
- `judgments.parquet`: the first shard's, as it is (every shard copied the same suite's);
- `manifest.json`: the first shard's, with a new run id, status `complete`, shard null, counts
  summed over the shards, started_at the earliest start and ended_at the latest end, and
  `merged_from` listing each shard's run id and label.
An unsharded run's rows are in completion order (workers finish in any order); sort it with
`canonical_order` to compare. Timing columns (sent_at, latency_ms, attempts) naturally differ
between two runs of a suite: everything else is the same.

The merged run is written in a hidden directory beside its final place, fsynced, and renamed
into place when complete, so a reader never sees half a merged run (the directory-level form of
`store.atomic`). Shards may be local or on `s3://` / `gs://` (read through `store.reader`); the
merged run is local. On any failure nothing is left: not the hidden directory, nor the
`suite=`/`run_date=` folders made for it. Once it is in place, the judgments logs beside the
shards (`labels_log`) add the lines the merged run's suite log lacks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import RunError
from runner.plan import parse_shard
from runner.schema import (
    HITS_FILE,
    HITS_SCHEMA,
    JUDGMENTS_FILE,
    MANIFEST_FILE,
    REQUESTS_FILE,
    REQUESTS_SCHEMA,
)
from runner.store._layout import make_folders, new_run_id, remove_folders, run_dir_for
from runner.store._manifest import RunCounts
from runner.store.atomic import fsync_dir, fsync_file, write_error
from runner.store.labels_log import suite_log, sync_log
from runner.store.location import resolve, scrub
from runner.store.reader import (
    RunInfo,
    RunRef,
    open_run,
    scan_hits,
    scan_judgments,
    scan_requests,
)

__all__ = [
    "HITS_ORDER",
    "REQUESTS_ORDER",
    "ROWS_PER_SORT",
    "MergeResult",
    "canonical_order",
    "merge_runs",
]

REQUESTS_ORDER: Final = ("request_key", "page")
HITS_ORDER: Final = ("request_key", "rank")
_ROW_GROUP: Final = 50_000
# Rows sorted in memory at once; a larger table is merged one range of request keys at a time.
ROWS_PER_SORT: Final = 250_000


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The merged run: where it is, its id, the shards it came from, its counts."""

    run_dir: Path
    run_id: str
    shards: tuple[str, ...]
    counts: RunCounts
    labels: int = 0  # lines of the shards' judgments logs the merged run's suite log lacked


def canonical_order(frame: pl.LazyFrame | pl.DataFrame, table: str) -> pl.LazyFrame:
    """`frame` (requests or hits rows) in the canonical order of a merged run."""
    order = {"requests": REQUESTS_ORDER, "hits": HITS_ORDER}[table]
    return frame.lazy().sort(list(order), maintain_order=True)


def merge_runs(
    runs: Sequence[RunRef], out: Path | str, *, run_id: str | None = None
) -> MergeResult:
    """Merge the shard runs `runs` (paths or URIs) into one new local run under the root `out`.

    See the module doc. On any failure nothing is left under `out`: not the scratch directory,
    nor the `suite=`/`run_date=` folders made for it.
    """
    infos = _checked_shards(runs)
    _same_judgments(infos)
    first = infos[0]
    started = min(_when(i.started_at, i.uri) for i in infos)
    ended = max((_when(i.ended_at, i.uri) for i in infos if i.ended_at), default=started)
    new_id = run_id or new_run_id(started)
    final = run_dir_for(out, first.suite_name, started.date(), new_id)
    if final.exists():
        raise RunError(f"{final}: already exists")
    made = make_folders(final.parent)
    scratch = final.with_name(f".{final.name}.tmp-{secrets.token_hex(4)}")
    try:
        scratch.mkdir()
        keys = _request_keys(infos)
        pages = sum(i.counts.pages for i in infos)
        n_hits = sum(i.counts.hits for i in infos)
        requests = [scan_requests(i) for i in infos]
        _write_table(requests, "requests", scratch / REQUESTS_FILE, first, keys, pages)
        hits = [scan_hits(i) for i in infos]
        _write_table(hits, "hits", scratch / HITS_FILE, first, keys, n_hits)
        judgments = first.location.child(JUDGMENTS_FILE).read_bytes()
        (scratch / JUDGMENTS_FILE).write_bytes(judgments)
        counts = _summed(infos)
        manifest = _manifest(infos, new_id, counts, started, ended)
        (scratch / MANIFEST_FILE).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        for written in scratch.iterdir():  # durable before the rename makes them visible
            fsync_file(written)
        fsync_dir(scratch)
        os.rename(scratch, final)
        fsync_dir(final.parent)
    except BaseException as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        remove_folders(made)  # only the folders this merge made
        if isinstance(exc, OSError):  # the disk, not the shards (a full disk): exit 1
            raise write_error(final, exc) from None
        raise
    # The merged run is in place; the shards' judgments logs join the one beside it (the suite's).
    target = suite_log(resolve(final))
    labels = sum(sync_log(suite_log(i.location), target) for i in infos)
    return MergeResult(final, new_id, tuple(str(i.shard) for i in infos), counts, labels)


def _checked_shards(runs: Sequence[RunRef]) -> list[RunInfo]:
    if not runs:
        raise RunError("merge: no run directories given")
    infos = []
    for run in runs:
        info = open_run(run)  # missing, corrupt or running: refused here
        if info.status != "complete":
            raise RunError(f"{info.uri}: run is {info.status}, not complete (resume it first)")
        if info.shard is None:
            raise RunError(f"{info.uri}: not a shard (its manifest has no shard k/N)")
        for scan in (scan_requests, scan_hits, scan_judgments):
            scan(info)  # a corrupt Parquet file is refused before anything is written
        infos.append(info)
    first = infos[0]
    for info in infos[1:]:
        for what in ("suite_hash", "suite_name", "dataset_id"):
            if getattr(info, what) != getattr(first, what):
                raise RunError(
                    f"{info.uri}: {what} {getattr(info, what)!r} differs from "
                    f"{getattr(first, what)!r} of {first.uri}: not shards of one suite"
                )
    labels = [parse_shard(str(i.shard)) for i in infos]
    totals = {n for _, n in labels}
    if len(totals) != 1:
        raise RunError(
            f"merge: shards of different splits: {', '.join(str(i.shard) for i in infos)}"
        )
    (n,) = totals
    seen: dict[int, str] = {}
    for (k, _), info in zip(labels, infos, strict=True):
        if k in seen:
            raise RunError(f"{info.uri}: shard {k}/{n} given twice (also {seen[k]})")
        seen[k] = info.uri
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in seen]
    if missing:
        raise RunError(f"merge: shards {', '.join(missing)} missing: all {n} shards are needed")
    return [info for _, info in sorted(zip(labels, infos, strict=True), key=lambda x: x[0])]


def _same_judgments(infos: Sequence[RunInfo]) -> None:
    def rows(info: RunInfo) -> pl.DataFrame:
        return scan_judgments(info).collect().sort(pl.all())

    first = rows(infos[0])
    for info in infos[1:]:
        if not rows(info).equals(first):
            raise RunError(f"{info.uri}: its judgments differ from those of {infos[0].uri}")


def _request_keys(infos: Sequence[RunInfo]) -> list[str]:
    """Every request key of the shards, sorted (one narrow column of the small requests file)."""
    frames = [scan_requests(i).select("request_key") for i in infos]
    keys = pl.concat(frames).unique().sort("request_key").collect()
    return [str(k) for k in keys["request_key"]]


def _buckets(keys: Sequence[str], rows: int) -> list[tuple[str | None, str | None]]:
    """Ranges [lo, hi) of request keys, each holding about `ROWS_PER_SORT` rows, in key order."""
    n = min(max(1, -(-rows // ROWS_PER_SORT)), max(1, len(keys)))
    bounds: list[str | None] = [None, *(keys[len(keys) * i // n] for i in range(1, n)), None]
    return list(itertools.pairwise(bounds))


def _write_table(
    frames: list[pl.LazyFrame],
    table: str,
    path: Path,
    first: RunInfo,
    keys: Sequence[str],
    rows: int,
) -> None:
    """Write the shards' rows of `table` in canonical order, one range of request keys at a time.

    Each range is read from every shard (a filter on request_key), sorted and written in
    batches, so at most `ROWS_PER_SORT` rows are sorted in memory at once; the ranges follow
    each other in key order, so the file is sorted as a whole.
    """
    schema = {"requests": REQUESTS_SCHEMA, "hits": HITS_SCHEMA}[table]
    rows_in = pl.concat(frames, how="vertical")
    try:
        # Batches through pyarrow, cast to the exact types of runner/schema.py (polars itself
        # writes large strings, which the readers refuse).
        with pq.ParquetWriter(path, schema) as writer:
            for lo, hi in _buckets(keys, rows):
                part = rows_in
                if lo is not None:
                    part = part.filter(pl.col("request_key") >= lo)
                if hi is not None:
                    part = part.filter(pl.col("request_key") < hi)
                ordered = canonical_order(part, table)
                for batch in ordered.collect_batches(chunk_size=_ROW_GROUP):
                    writer.write_table(batch.to_arrow().cast(schema), row_group_size=_ROW_GROUP)
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as exc:
        if isinstance(exc, OSError) and write_error(path, exc).errno is not None:
            raise  # a write the system refused: merge_runs names the run and the cause
        reason = scrub(str(exc))
        raise RunError(f"merge of {table} (suite {first.suite_name}) failed: {reason}") from None


def _summed(infos: Sequence[RunInfo]) -> RunCounts:
    names = [f.name for f in dataclasses.fields(RunCounts)]
    return RunCounts(**{name: sum(getattr(i.counts, name) for i in infos) for name in names})


def _when(stamp: str | None, where: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        raise RunError(f"{where}: manifest time {stamp!r} is not ISO 8601") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _manifest(
    infos: Sequence[RunInfo],
    run_id: str,
    counts: RunCounts,
    started: dt.datetime,
    ended: dt.datetime,
) -> dict[str, Any]:
    manifest = dict(infos[0].manifest)
    manifest.update(
        run_id=run_id,
        status="complete",
        shard=None,
        counts=counts.to_dict(),
        started_at=started.isoformat(timespec="milliseconds"),
        ended_at=ended.isoformat(timespec="milliseconds"),
        merged_from=[{"run_id": i.run_id, "shard": i.shard} for i in infos],
    )
    return manifest
