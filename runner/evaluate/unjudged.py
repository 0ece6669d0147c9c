"""Unjudged hits: how many per query, and a file of them for a person to label.

The judge-todo file is TREC qrels with the grade left at -1, grouped by query under a comment
naming the query's text; a comment line above each entry gives its file name and caption (a
comment line, not a trailing comment, so that every qrels reader, trec_eval's too, accepts it):

    # vlbench judge-todo: run 2024-... (top 10 of every mode and setting)
    # Replace -1 by a grade: 0 not relevant, 1 relevant, 2 highly relevant.
    # Lines left at -1 are ignored when this file is read back as qrels.

    # query dog-beach: a dog playing on the beach
    # 000000000123.jpg | A brown dog runs on the sand.
    dog-beach 0 m000123 -1

`runner.evaluate.judgments.load_qrels` reads it back (comments and -1 lines are skipped), so a
labelled copy can be passed straight to `evaluate_run(..., extra_judgments=[path])` or added to
the suite's `judgments.qrels`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import polars as pl

from runner.errors import RunError
from runner.evaluate.evaluation import UNJUDGED_SCHEMA
from runner.evaluate.judgments import load_run_judgments
from runner.store.atomic import atomic_write, write_error
from runner.store.reader import RunRef, local_dir, open_run, scan_requests

__all__ = [
    "JUDGE_TODO_FILE",
    "count_unjudged",
    "judge_todo",
    "judge_todo_path",
    "query_texts",
    "write_judge_todo",
]

JUDGE_TODO_FILE: Final = "judge-todo.qrels"
_SPACE: Final = re.compile(r"\s+")
_CAPTION_CHARS: Final = 120


def count_unjudged(
    ranked: pl.DataFrame, qrels: pl.DataFrame, cells: pl.DataFrame, *, k: int = 10
) -> pl.DataFrame:
    """Per (query, mode, setting): media in the top k and how many of them have no judgment.

    `ranked`: `mode, setting, query_id, doc, rank` (media); `qrels`: media-level judgments
    (`query_id, media_id, grade`); `cells`: every (mode, setting, query_id) asked for.
    """
    keys = ["query_id", "mode", "setting"]
    judged = qrels.select(
        "query_id", pl.col("media_id").alias("doc"), pl.lit(True).alias("_judged")
    )
    top = ranked.filter(pl.col("rank") <= k).join(judged, on=["query_id", "doc"], how="left")
    counts = top.group_by(keys).agg(
        pl.len().cast(pl.Int64).alias("n_hits"),
        pl.col("_judged").is_null().sum().cast(pl.Int64).alias("n_unjudged"),
    )
    return (
        cells.select(keys)
        .unique()
        .join(counts, on=keys, how="left")
        .with_columns(
            pl.col("n_hits", "n_unjudged").fill_null(0), pl.lit(k, dtype=pl.Int64).alias("k")
        )
        .select(UNJUDGED_SCHEMA.names())
        .sort(keys)
    )


def judge_todo(hits: pl.LazyFrame, qrels: pl.DataFrame, *, k: int = 10) -> pl.DataFrame:
    """The distinct unjudged media in the top k of any mode and setting, per query.

    Columns `query_id, media_id, best_rank, file_name, caption`, by query then best rank.
    """
    judged = qrels.lazy().select("query_id", "media_id")
    return (
        hits.filter(pl.col("rank") <= k)
        .join(judged, on=["query_id", "media_id"], how="anti")
        .group_by("query_id", "media_id")
        .agg(
            pl.col("rank").min().alias("best_rank"),
            pl.col("file_name").drop_nulls().first(),
            pl.col("caption").drop_nulls().first(),
        )
        .sort("query_id", "best_rank", "media_id")
        .collect()
    )


def query_texts(run: RunRef) -> dict[str, str]:
    """Each query's text, as the run's requests sent it."""
    return dict(
        scan_requests(run)
        .group_by("query_id")
        .agg(pl.col("query_text").drop_nulls().first())
        .collect()
        .iter_rows()
    )


def _one_line(text: str | None) -> str:
    flat = _SPACE.sub(" ", text or "").strip()
    return flat if len(flat) <= _CAPTION_CHARS else flat[: _CAPTION_CHARS - 1] + "…"


def _check_token(kind: str, value: str) -> None:
    if not value or _SPACE.search(value):
        raise RunError(
            f"judge-todo: {kind} {value!r} is empty or contains white space (not TREC-safe)"
        )


def judge_todo_path(run: RunRef) -> Path:
    """Where `vlbench judge-todo` writes by default: in the run (for a run on object storage,
    in its local folder, `store.reader.local_dir`)."""
    return local_dir(open_run(run)) / JUDGE_TODO_FILE


def write_judge_todo(
    run: RunRef,
    out_path: Path | str,
    *,
    k: int = 10,
    extra_judgments: Sequence[Path | str] | None = None,
) -> int:
    """Write the run's unjudged top-k media as a TREC qrels file to label; return their number.

    Judgments are the run's own plus `extra_judgments` (qrels files) plus the labels given in
    `vlbench judge`, as `evaluate_run` reads them, so labelling the file and passing it back
    leaves nothing to do. The file is written
    atomically.
    """
    info = open_run(run)
    hits, qrels = load_run_judgments(info, extra_judgments)
    todo = judge_todo(hits, qrels, k=k)
    texts = query_texts(info)
    lines = [
        f"# vlbench judge-todo: run {info.run_id} (top {k} of every mode and setting)",
        "# Replace -1 by a grade: 0 not relevant, 1 relevant, 2 highly relevant.",
        "# Lines left at -1 are ignored when this file is read back as qrels.",
    ]
    current = None
    for row in todo.iter_rows(named=True):
        query_id, media_id = row["query_id"], row["media_id"]
        _check_token("query id", query_id)
        _check_token("media id", media_id)
        if query_id != current:
            current = query_id
            lines += ["", f"# query {query_id}: {_one_line(texts.get(query_id))}"]
        about = " | ".join(
            part for part in (_one_line(row["file_name"]), _one_line(row["caption"])) if part
        )
        lines += [f"# {about}"] if about else []
        lines.append(f"{query_id} 0 {media_id} -1")
    try:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(Path(out_path).parent, exc) from exc
    with atomic_write(out_path) as out:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))
    return todo.height
