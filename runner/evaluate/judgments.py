"""Judgments: TREC qrels files, silver judgments by label, and their resolution to media ids.

Sources (rows of `runner.schema.JUDGMENTS_SCHEMA`, `kind` says how `value` names an item):
- `media_id`: the item is that media id.
- `file_name`: the item is the media whose file name that is (looked up in the run's hits).
- `doc`: a TREC qrels document: a media id when the run has one of that name, else a file
  name, else kept as it is (a relevant item the run never returned: it still counts in recall).
- `label`: silver judgments. A media is relevant with `grade` when its `labels` contain `value`.
  The relevant set of a query is the POOL: every distinct media carrying the label that the run
  returned, for any query, mode or setting (TREC pooling: relevant media that no system
  returned are unknown, so recall is over-stated against the true collection and comparable
  only between runs with the same pool). A hit of that query whose labels are known and carry
  none of its labels is judged non-relevant (grade 0); a hit with null labels stays unjudged.

Several sources for the same (query, media) merge by the maximum grade. A grade below 0 means
"not judged yet" (the placeholder of `write_judge_todo`) and is dropped when a file is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import polars as pl

from runner.errors import RunError, SuiteError
from runner.schema import JUDGMENTS_SCHEMA
from runner.store.labels_log import pull_suite_log
from runner.store.reader import RunRef, local_dir, open_run, scan_hits, scan_judgments
from runner.suite.files import parse_qrels_lines

__all__ = [
    "JUDGMENT_KINDS",
    "QRELS_SCHEMA",
    "empty_judgments",
    "load_qrels",
    "load_run_judgments",
    "parse_qrels",
    "resolve_judgments",
]

JUDGMENT_KINDS: Final = ("media_id", "file_name", "doc", "label")

# Resolved media-level judgments: one row per judged (query, media).
QRELS_SCHEMA: Final = pl.Schema({"query_id": pl.String, "media_id": pl.String, "grade": pl.Int32})

_JUDGMENTS_POLARS: Final = pl.DataFrame(JUDGMENTS_SCHEMA.empty_table()).schema


def empty_judgments() -> pl.DataFrame:
    """A frame of JUDGMENTS_SCHEMA with no rows."""
    return pl.DataFrame(schema=_JUDGMENTS_POLARS)


def parse_qrels(lines: Iterable[str], *, path: str) -> pl.DataFrame:
    """TREC qrels lines as JUDGMENTS_SCHEMA rows of kind "doc", `source` the path.

    The lines are read by `runner.suite.files.parse_qrels_lines`, the reader the suite loader
    uses too: 4 fields and an optional trailing `#` comment, whole-number grades, blank and `#`
    lines skipped, lines graded below 0 (not judged yet) skipped. A malformed line raises
    `SuiteError` naming `path:line`.
    """
    rows = list(parse_qrels_lines(lines, path=path))
    return pl.DataFrame(
        {
            "query_id": [row.query_id for row in rows],
            "kind": ["doc"] * len(rows),
            "value": [row.doc for row in rows],
            "grade": [row.grade for row in rows],
            "source": [path] * len(rows),
        },
        schema=_JUDGMENTS_POLARS,
    )


def load_qrels(path: Path | str) -> pl.DataFrame:
    """Read a TREC qrels file (see `parse_qrels`); `source` is the path as given."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"cannot read qrels: {exc}", path=str(path)) from exc
    # Split at "\n" only (read_text made every line break one), numbering lines as a file does.
    return parse_qrels(text.split("\n"), path=str(path))


def _check_kinds(judgments: pl.DataFrame) -> None:
    unknown = judgments.filter(~pl.col("kind").is_in(JUDGMENT_KINDS))
    if unknown.height:
        row = unknown.row(0, named=True)
        raise RunError(
            f"judgments: unknown kind {row['kind']!r} (query {row['query_id']!r}, source "
            f"{row['source']!r}); expected one of {', '.join(JUDGMENT_KINDS)}"
        )


def _items(judgments: pl.DataFrame, hits: pl.LazyFrame) -> pl.LazyFrame:
    """Judgments naming one item each (media_id, file_name, doc), as (query_id, media_id, grade)."""
    seen = hits.select("media_id").unique()
    by_file = hits.select("file_name", "media_id").drop_nulls("file_name").unique()
    items = judgments.lazy().filter(pl.col("kind") != "label")
    # A doc is a media id when the run knows it; otherwise try it as a file name.
    known = items.join(seen, left_on="value", right_on="media_id", how="semi")
    as_media = pl.concat(
        [
            items.filter(pl.col("kind") == "media_id"),
            known.filter(pl.col("kind") == "doc"),
        ]
    ).select("query_id", pl.col("value").alias("media_id"), "grade")
    named = pl.concat(
        [
            items.filter(pl.col("kind") == "file_name"),
            items.filter(pl.col("kind") == "doc").join(
                seen, left_on="value", right_on="media_id", how="anti"
            ),
        ]
    )
    resolved = named.join(by_file, left_on="value", right_on="file_name", how="inner").select(
        "query_id", "media_id", "grade"
    )
    # Unresolved names stay as they are: relevant items never returned count in recall.
    unresolved = named.join(by_file, left_on="value", right_on="file_name", how="anti").select(
        "query_id", pl.col("value").alias("media_id"), "grade"
    )
    return pl.concat([as_media, resolved, unresolved])


def _labels(judgments: pl.DataFrame, hits: pl.LazyFrame) -> pl.LazyFrame:
    """Label judgments as (query_id, media_id, grade): the pooled relevant set plus judged zeros."""
    by_label = judgments.lazy().filter(pl.col("kind") == "label")
    media_labels = (
        hits.select("media_id", "labels")
        .drop_nulls("labels")
        .unique(subset="media_id", keep="any")
        .explode("labels")
        .drop_nulls("labels")
        .rename({"labels": "label"})
    )
    relevant = by_label.join(media_labels, left_on="value", right_on="label", how="inner").select(
        "query_id", "media_id", "grade"
    )
    # Hits of a label-judged query with known labels are judged: 0 unless a label matched.
    labelled_queries = by_label.select("query_id").unique()
    known_hits = (
        hits.filter(pl.col("labels").is_not_null())
        .select("query_id", "media_id")
        .unique()
        .join(labelled_queries, on="query_id", how="semi")
        .with_columns(pl.lit(0, dtype=pl.Int32).alias("grade"))
    )
    return pl.concat([relevant, known_hits])


def resolve_judgments(judgments: pl.DataFrame, hits: pl.LazyFrame) -> pl.DataFrame:
    """Media-level qrels (QRELS_SCHEMA) of every source, merged by the maximum grade.

    `judgments` is a JUDGMENTS_SCHEMA frame (the run's `judgments.parquet` plus any qrels files);
    `hits` the run's hits, used to resolve file names and to pool label judgments.
    """
    _check_kinds(judgments)
    judgments = judgments.filter(pl.col("grade") >= 0).cast(_JUDGMENTS_POLARS)
    merged = (
        pl.concat([_items(judgments, hits), _labels(judgments, hits)])
        .group_by("query_id", "media_id")
        .agg(pl.col("grade").max())
        .sort("query_id", "media_id")
    )
    return merged.collect().cast(QRELS_SCHEMA)


def load_run_judgments(
    run: RunRef,
    extra_judgments: Sequence[Path | str] | None = None,
    *,
    judgments_store: bool = True,
) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """The run's hits (lazy) and its media-level qrels: `judgments.parquet` plus qrels files.

    With `judgments_store`, the labels given in `vlbench judge` (the store beside the suite's
    runs, `runner.judge.labels`) are added too; for a run on object storage, the log pushed
    beside it is first added to the local store (`store.labels_log`). The one place judgments
    are resolved:
    `evaluate_run` carries the result in `Evaluation.qrels`, and `write_judge_todo` uses it.
    """
    from runner.judge.labels import store_judgments  # the judging page's store

    info = open_run(run)
    hits = scan_hits(info)
    sources = [scan_judgments(info).collect().cast(empty_judgments().schema)]
    sources += [load_qrels(path) for path in extra_judgments or ()]
    if judgments_store:
        local = local_dir(info)
        if info.location.remote:  # the labels pushed beside it join the local store first
            pull_suite_log(info.location, local)
        sources.append(store_judgments(local))
    return hits, resolve_judgments(pl.concat(sources), hits)
