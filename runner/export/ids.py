"""The media IDs a run matched, deduplicated, in the formats users ask for.

    result = export_run(run_dir, "matches.csv", fmt="csv", group_by="query", min_score=0.5)
    export_run(run_dir, sys.stdout.buffer, fmt="txt")        # one id a line, for piping

One output row per media item and group (`merged`: one row per media item over the whole run),
with the columns of `EXPORT_COLUMNS`:
- the group's columns (query_id / mode / setting), then `media_id`, `file_name`;
- `score`: the best NORMALISED score the item got in the group (higher is always better:
  a cosine distance d is exported as 1 - d, bm25 as it is; `runner.schema.normalise_score`),
  and `raw_score` / `score_type`: what the API said for that best hit;
- `best_rank` (its best 1-based rank in any request of the group), `n_hits` (how many hits of
  the group were this item), and `queries` / `modes`: which query ids and modes matched it
  (sorted; a list in JSON Lines and Parquet, joined with ";" in CSV).
Rows are ordered by the group's columns, then best score (highest first), then media id.

Filters apply to hits BEFORE deduplication: `modes` and `queries` keep those values (unknown
ones are refused), `min_score` keeps hits whose normalised `score` is >= it (hits without a
score are dropped then), and `top_k` keeps the first k hits (`rank` <= k) of every request.
Because raw score directions differ by score type (a distance is better low, bm25 high),
`min_score` never looks at the raw score.

Across modes (`merged`, `query`), `score` is the best over hits of different score types, which
are not on one scale (1 - cosine distance within 0..1, bm25 unbounded): group by `mode` or
`setting` to compare like with like.

Formats: `csv`, `jsonl`, `parquet`, and `txt` (the media_id column alone, no header; with a
grouping other than `merged` an id appears once per group that matched it).

Streaming and atomicity: the run's hits are scanned lazily and aggregated by polars' streaming
engine straight into a file (`sink_*`). A run of more than `HITS_PER_PARTITION` hits is
aggregated in hash partitions of media_id, one at a time, so the hash tables hold one
partition's items; the final ordering sorts the (narrow) aggregated rows. The file is written
under a hidden temporary name beside the target and renamed over it (`os.replace`) only when
complete (`runner.store.atomic`); on any failure the temporary file is removed, so the target
is either the old file, the complete new one, or absent; a full disk is a `WriteError` naming
the file. Output to a stream (stdout) is written to a temporary file first and copied when
complete.

Refused with `RunError`: a run that does not exist, one still `running`, a Parquet file that is
missing, corrupt, or has other columns than `runner/schema.py`. Runs may live on `s3://` or
`gs://`: they are read through the one reader, `runner.store.reader`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import polars as pl
import pyarrow.parquet as pq

from runner.errors import RunError, UsageError, VlbenchError
from runner.export.formats import FORMATS, GROUPINGS, ExportFormat, choose_format
from runner.store.atomic import atomic_path
from runner.store.location import scrub
from runner.store.reader import RunRef, open_run, scan_hits, scan_requests

__all__ = [
    "EXPORT_COLUMNS",
    "GROUPINGS",
    "HITS_PER_PARTITION",
    "ExportFormat",
    "ExportResult",
    "aggregate_ids",
    "choose_format",
    "export_run",
    "write_ids",
]

EXPORT_COLUMNS: Final = (
    "media_id",
    "file_name",
    "score",
    "raw_score",
    "score_type",
    "best_rank",
    "n_hits",
    "queries",
    "modes",
)
_LIST_SEPARATOR: Final = ";"
# Hits aggregated in one pass at most; more are split into hash partitions of media_id (measured:
# ~2M hits with ~0.9M distinct items take ~450 MB in one pass, ~260 MB in four).
HITS_PER_PARTITION: Final = 500_000
_COPY_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote: `path` (None for a stream), its format, grouping and row count."""

    path: Path | None
    fmt: ExportFormat
    group_by: str
    rows: int
    run: str


def export_run(
    run: RunRef,
    out: Path | str | IO[bytes],
    *,
    fmt: ExportFormat = "csv",
    group_by: str = "merged",
    modes: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    min_score: float | None = None,
    top_k: int | None = None,
) -> ExportResult:
    """Write the deduplicated media IDs of the finished run at `run` to `out` (see the module doc).

    `run` is a run directory or a URI (`s3://.../run_id=...`); `out` a path, "-" is not taken
    here (pass `sys.stdout.buffer`). Raises `RunError` for a run that cannot be exported,
    `UsageError` for a bad format, grouping, filter value, or a mode/query the run does not have.
    """
    _check_options(fmt, group_by, min_score, top_k)
    # An unknown run, a running run: refused before anything is written.
    info = open_run(run)
    hits = scan_hits(info)
    if modes or queries:
        _check_known(info.uri, scan_requests(info), modes, queries)
    if modes:
        hits = hits.filter(pl.col("mode").is_in(list(modes)))
    if queries:
        hits = hits.filter(pl.col("query_id").is_in(list(queries)))
    if min_score is not None:
        hits = hits.filter(pl.col("score") >= min_score)
    if top_k is not None:
        hits = hits.filter(pl.col("rank") <= top_k)
    try:
        path, rows = write_ids(hits, out, fmt=fmt, group_by=group_by, n_hits=info.counts.hits)
    except RunError as exc:
        raise RunError(f"{info.uri}: {exc}") from None
    return ExportResult(path, fmt, group_by, rows, info.uri)


def _check_options(fmt: str, group_by: str, min_score: float | None, top_k: int | None) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    if group_by not in GROUPINGS:
        raise UsageError(f"group by {group_by!r}: use one of {', '.join(GROUPINGS)}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"top-k {top_k}: must be at least 1")
    if min_score is not None and min_score != min_score:  # NaN keeps nothing, silently
        raise UsageError("min-score: not a number")


def _check_known(
    run: str,
    requests: pl.LazyFrame,
    modes: Sequence[str] | None,
    queries: Sequence[str] | None,
) -> None:
    """Refuse filter values the run never asked (a typo would export nothing, silently)."""
    try:
        known = requests.select("mode", "query_id").unique().collect()
    except pl.exceptions.PolarsError as exc:
        raise RunError(f"{run}: requests.parquet cannot be read ({scrub(str(exc))})") from None
    for what, asked, column in (("mode", modes, "mode"), ("query", queries, "query_id")):
        have = set(known[column].to_list())
        unknown = sorted(set(asked or ()) - have)
        if unknown:
            shown = ", ".join(sorted(have)[:10]) + (", ..." if len(have) > 10 else "")
            raise UsageError(f"{run}: no {what} {', '.join(unknown)} in this run (it has: {shown})")


def aggregate_ids(hits: pl.LazyFrame, group_by: str) -> pl.LazyFrame:
    """Hits (any frame with the hit columns) -> one row per (group, media_id), unordered.

    Columns: the group's, then `EXPORT_COLUMNS`. Nothing is computed until the frame is sunk.
    """
    keys = list(GROUPINGS[group_by])
    return hits.group_by([*keys, "media_id"]).agg(
        pl.col("file_name").drop_nulls().min().alias("file_name"),
        pl.col("score").max().alias("score"),
        pl.col("raw_score").max_by("score").alias("raw_score"),
        pl.col("score_type").max_by("score").alias("score_type"),
        pl.col("rank").min().cast(pl.Int32).alias("best_rank"),
        pl.len().cast(pl.Int64).alias("n_hits"),
        pl.col("query_id").unique().sort().alias("queries"),
        pl.col("mode").unique().sort().alias("modes"),
    )


def _ordered(frame: pl.LazyFrame, group_by: str) -> pl.LazyFrame:
    """The export's row order: group columns, best score first (missing last), media id."""
    keys = list(GROUPINGS[group_by])
    return frame.sort(
        [*keys, "score", "media_id"],
        descending=[*([False] * len(keys)), True, False],
        nulls_last=True,
    ).select([*keys, *EXPORT_COLUMNS])


def write_ids(
    hits: pl.LazyFrame,
    out: Path | str | IO[bytes],
    *,
    fmt: ExportFormat,
    group_by: str = "merged",
    n_hits: int | None = None,
) -> tuple[Path | None, int]:
    """Aggregate `hits` (`aggregate_ids`) and stream the rows into `out` atomically.

    With `n_hits` (how many hits the frame holds, e.g. from the manifest) above
    `HITS_PER_PARTITION`, the hits are aggregated in hash partitions of media_id, one after
    the other, each into a Parquet part in a hidden scratch directory beside the target: the
    hash tables then hold one partition's items at a time. Returns (path or None, rows).
    Raises `RunError` when the data cannot be read or written (nothing is left behind).
    """
    if isinstance(out, (str, Path)):
        target = Path(out)
        if target.is_dir():
            raise UsageError(f"{target}: is a directory (give a file name)")
        if not target.parent.is_dir():
            raise UsageError(f"{target.parent}: no such directory")
        with (
            atomic_path(target) as tmp,
            tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as d,
        ):
            rows = _sink(_aggregated(hits, group_by, n_hits, Path(d)), tmp, fmt)
        return target, rows
    with tempfile.TemporaryDirectory(prefix="vlbench-export-") as scratch:
        tmp = Path(scratch) / f"ids.{fmt}"
        rows = _sink(_aggregated(hits, group_by, n_hits, Path(scratch)), tmp, fmt)
        with open(tmp, "rb") as src:
            shutil.copyfileobj(src, out, _COPY_CHUNK)
        out.flush()
    return None, rows


def _aggregated(
    hits: pl.LazyFrame, group_by: str, n_hits: int | None, scratch: Path
) -> pl.LazyFrame:
    partitions = max(1, -(-(n_hits or 0) // HITS_PER_PARTITION))
    if partitions == 1:
        return _ordered(aggregate_ids(hits, group_by), group_by)
    parts = []
    for i in range(partitions):
        part = scratch / f"part-{i:04d}.parquet"
        mine = hits.filter(pl.col("media_id").hash(seed=0) % partitions == i)
        try:
            aggregate_ids(mine, group_by).sink_parquet(part)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise RunError(f"cannot export: {scrub(str(exc))}") from None
        parts.append(part)
    return _ordered(pl.scan_parquet(parts), group_by)


def _sink(frame: pl.LazyFrame, path: Path, fmt: ExportFormat) -> int:
    try:
        if fmt == "parquet":
            frame.sink_parquet(path, row_group_size=100_000)
            return int(pq.ParquetFile(path).metadata.num_rows)
        if fmt == "jsonl":
            frame.sink_ndjson(path, check_extension=False)
            return _count_lines(path)
        if fmt == "txt":
            frame.select("media_id").sink_csv(
                path, include_header=False, quote_style="never", check_extension=False
            )
            return _count_lines(path)
        lists = [c for c in ("queries", "modes") if c in frame.collect_schema().names()]
        flat = frame.with_columns(pl.col(c).list.join(_LIST_SEPARATOR) for c in lists)
        flat.sink_csv(path, check_extension=False)
        # Not a line count: a quoted file name may hold a newline.
        return int(pl.scan_csv(path, infer_schema=False).select(pl.len()).collect().item())
    except VlbenchError:
        raise
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise RunError(f"cannot export: {scrub(str(exc))}") from None


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            count += chunk.count(b"\n")
    return count
