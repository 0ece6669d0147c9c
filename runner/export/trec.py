"""A run as TREC run files, one per mode and setting, for trec_eval, ranx and ir_measures.

    paths = write_trec_runs(run_dir, "trec/")   # trec/<mode>@<setting>.run ..., trec/qrels.txt

Each line is `qid Q0 doc rank score tag`: doc the media id, rank vlbench's media-level rank (a
media returned twice keeps its best rank, as the evaluation does), score the normalised score
(higher is better) of that hit, tag `<mode>@<setting>`. Those tools order a query's documents by
score and break ties by document id, not by the rank column, so the score written is nudged
down where needed to fall strictly with rank: s'_i = min(s_i, s'_{i-1} - 1e-6). Equal or
inverted scores (the API's order is not always the score's) thus keep vlbench's order, and
trec_eval measures the ranking vlbench measured. `qrels.txt` holds the run's media-level
judgments as the evaluation resolved them (label judgments included), grade as given.

Queries without hits at a setting have no line: trec_eval leaves such a query out of its means,
where vlbench scores it 0 (see `runner.evaluate.measures`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import polars as pl

from runner.evaluate.judgments import load_run_judgments
from runner.store.atomic import atomic_write_bytes, write_error

__all__ = ["QRELS_FILE", "SCORE_STEP", "trec_rankings", "write_trec_runs"]

QRELS_FILE: Final = "qrels.txt"
SCORE_STEP: Final = 1e-6  # the smallest gap written between two consecutive scores
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._=@+-]+")


def _tag(mode: str, setting: str) -> str:
    return _UNSAFE.sub("_", f"{mode}@{setting}")


def trec_rankings(hits: pl.LazyFrame, modes: Sequence[str] | None = None) -> pl.DataFrame:
    """Media-level rankings with TREC scores: mode, setting, query_id, doc, rank, score, tag.

    Sorted by (mode, setting, query_id, rank); scores fall strictly with rank (module doc).
    """
    if modes:
        hits = hits.filter(pl.col("mode").is_in(list(modes)))
    keys = ["mode", "setting", "query_id"]
    best = (
        hits.sort([*keys, "rank", "media_id"])
        .group_by([*keys, "media_id"], maintain_order=True)
        .agg(pl.col("rank").first().cast(pl.Int64), pl.col("score").first().cast(pl.Float64))
        .sort([*keys, "rank", "media_id"])
        .collect()
    )
    position = pl.int_range(pl.len()).over(keys).cast(pl.Float64)
    lifted = pl.col("score").fill_null(0.0) + position * SCORE_STEP
    return best.with_columns(
        (lifted.cum_min().over(keys) - position * SCORE_STEP).round(9).alias("score"),
        pl.col("media_id").alias("doc"),
        pl.concat_str("mode", pl.lit("@"), "setting")
        .str.replace_all(_UNSAFE.pattern, "_")
        .alias("tag"),
    ).select(*keys, "doc", "rank", "score", "tag")


def _write_lines(path: Path, lines: list[str]) -> None:
    atomic_write_bytes(path, "".join(lines).encode())  # whole or absent, no temp left behind


def write_trec_runs(
    run_dir: Path | str,
    out_dir: Path | str,
    *,
    modes: Sequence[str] | None = None,
    extra_judgments: Sequence[Path | str] | None = None,
) -> list[Path]:
    """Write `<mode>@<setting>.run` for every mode and setting, and `qrels.txt`; their paths.

    `modes` keeps only those modes; `extra_judgments` (qrels files) are added to the run's own
    judgments in `qrels.txt`. Raises `RunError` for an unreadable run, `WriteError` for an
    unwritable `out_dir` (a full disk).
    """
    out = Path(out_dir)
    hits, qrels = load_run_judgments(Path(run_dir), extra_judgments)
    ranked = trec_rankings(hits, modes)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for (mode, setting), part in ranked.group_by("mode", "setting", maintain_order=True):
            path = out / f"{_tag(str(mode), str(setting))}.run"
            lines = [
                f"{q} Q0 {d} {r} {s:.9f} {t}\n"
                for q, d, r, s, t in part.select(
                    "query_id", "doc", "rank", "score", "tag"
                ).iter_rows()
            ]
            _write_lines(path, lines)
            paths.append(path)
        qrels_lines = [
            f"{q} 0 {m} {g}\n"
            for q, m, g in qrels.select("query_id", "media_id", "grade")
            .sort("query_id", "media_id")
            .iter_rows()
        ]
        _write_lines(out / QRELS_FILE, qrels_lines)
    except OSError as exc:  # the folder itself (a file's write raises WriteError): exit 1
        raise write_error(out, exc) from exc
    return [*paths, out / QRELS_FILE]
