"""Evaluate a run directory: everything in `Evaluation`, from the run's Parquet files alone.

What is scored:
- Rankings: one per (mode, setting, query) that the run asked for, i.e. that has a row in
  `requests.parquet` or a hit (so a setting that returned nothing scores 0, and a shard that
  never sent a request does not). A request that failed counts as returning nothing: check the
  manifest's status before trusting a partial run.
- Media level: each preview is an item, ranked by `rank` (a media seen twice keeps its best rank).
- Cluster level: each returned cluster is an item, ranked by `cluster_rank`. A cluster's grade
  is the maximum grade of its members whose cluster at that granularity the run saw (the
  media -> cluster map is taken from every hit of the run at the setting's `threshold`);
  a cluster is judged when one such member is judged. The ideal ranking and |R| are over those
  clusters, so relevant media that the run never returned at that granularity are not counted
  (pooling again). Judged queries are the same as at the media level.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import RunError
from runner.evaluate.distributions import (
    label_relevance,
    score_histograms,
    score_quantiles,
    threshold_check,
)
from runner.evaluate.evaluation import (
    METRICS_SCHEMA,
    PER_QUERY_SCHEMA,
    QUERIES_SCHEMA,
    SUMMARY_SCHEMA,
    Evaluation,
)
from runner.evaluate.judgments import load_run_judgments
from runner.evaluate.measures import DEFAULT_MEASURES, Measure, compute_measures, parse_measures
from runner.evaluate.overlap import mode_overlap, wins_losses
from runner.evaluate.sweep import SWEEP_MEASURES, choose_operating_point, threshold_sweep
from runner.evaluate.unjudged import count_unjudged
from runner.store.atomic import atomic_path
from runner.store.location import scrub
from runner.store.reader import RunRef, open_run, run_location, scan_hits, scan_requests

__all__ = [
    "DISTRIBUTIONS_FILE",
    "METRICS_FILE",
    "evaluate_run",
    "read_metrics",
    "summarise_measures",
    "write_evaluation",
]

METRICS_FILE: Final = "metrics.parquet"
DISTRIBUTIONS_FILE: Final = "distributions.parquet"

_SYSTEM: Final = ["mode", "setting"]
_MEDIA_POOL: Final = ""


def _systems(hits: pl.LazyFrame, requests: pl.LazyFrame) -> pl.DataFrame:
    """(mode, setting) -> cutoff and clustering granularity, from requests and hits."""
    columns = [*_SYSTEM, pl.col("cutoff").cast(pl.Float64), pl.col("threshold").cast(pl.Int64)]
    both = pl.concat([requests.select(columns), hits.select(columns)])
    return (
        both.group_by(_SYSTEM)
        .agg(pl.col("cutoff").drop_nulls().first(), pl.col("threshold").drop_nulls().first())
        .sort(_SYSTEM)
        .collect()
    )


def _cells(hits: pl.LazyFrame, requests: pl.LazyFrame) -> pl.DataFrame:
    keys = [*_SYSTEM, "query_id"]
    return pl.concat([requests.select(keys), hits.select(keys)]).unique().sort(keys).collect()


def _media_rankings(hits: pl.LazyFrame) -> pl.DataFrame:
    return (
        hits.group_by([*_SYSTEM, "query_id", "media_id"])
        .agg(pl.col("rank").min().cast(pl.Int64))
        .select(
            *_SYSTEM,
            "query_id",
            pl.lit(_MEDIA_POOL).alias("pool"),
            pl.col("media_id").alias("doc"),
            "rank",
        )
        .collect()
    )


def _cluster_rankings(hits: pl.LazyFrame) -> pl.DataFrame:
    return (
        hits.group_by([*_SYSTEM, "query_id", "threshold", "cluster_id"])
        .agg(pl.col("cluster_rank").min().cast(pl.Int64).alias("rank"))
        .select(
            *_SYSTEM,
            "query_id",
            pl.col("threshold").cast(pl.String).alias("pool"),
            pl.col("cluster_id").alias("doc"),
            "rank",
        )
        .collect()
    )


def _cluster_qrels(hits: pl.LazyFrame, qrels: pl.DataFrame) -> pl.DataFrame:
    members = hits.select(
        pl.col("threshold").cast(pl.String).alias("pool"), "media_id", "cluster_id"
    ).unique()
    return (
        qrels.lazy()
        .join(members, on="media_id", how="inner")
        .group_by("query_id", "pool", pl.col("cluster_id").alias("doc"))
        .agg(pl.col("grade").max())
        .collect()
    )


def _per_query(
    measures: Sequence[Measure],
    rankings: dict[str, tuple[pl.DataFrame, pl.DataFrame]],
    systems: pl.DataFrame,
    cells: pl.DataFrame,
    judged: pl.DataFrame,
) -> pl.DataFrame:
    frames = []
    for unit, (ranked, qrels) in rankings.items():
        pool = pl.lit(_MEDIA_POOL) if unit == "media" else pl.col("threshold").cast(pl.String)
        unit_cells = cells.join(systems, on=_SYSTEM, how="left").with_columns(pool.alias("pool"))
        values = compute_measures(ranked, qrels, measures, cells=unit_cells, judged=judged)
        frames.append(
            values.join(systems.select(*_SYSTEM, "cutoff"), on=_SYSTEM, how="left").with_columns(
                pl.lit(unit).alias("unit")
            )
        )
    return pl.concat(frames).select(PER_QUERY_SCHEMA.names()).cast(PER_QUERY_SCHEMA)


def summarise_measures(per_query: pl.DataFrame) -> pl.DataFrame:
    """Per-query values → one row a (mode, setting, cutoff, unit, measure) of `SUMMARY_SCHEMA`.

    `value` is the mean over the queries that have one (a null, a query the measure cannot
    score, is left out of the mean), `n_queries` how many did. A fused ranking is summarised
    the same way (`runner.evaluate.fusion`).
    """
    keys = ["mode", "setting", "cutoff", "unit", "measure"]
    return (
        per_query.group_by(keys, maintain_order=True)
        .agg(
            pl.col("value").mean(),
            pl.col("value").is_not_null().sum().cast(pl.Int64).alias("n_queries"),
        )
        .select(SUMMARY_SCHEMA.names())
        .cast(SUMMARY_SCHEMA)
    )


def _queries(requests: pl.LazyFrame, cells: pl.DataFrame, qrels: pl.DataFrame) -> pl.DataFrame:
    texts = requests.group_by("query_id").agg(pl.col("query_text").drop_nulls().first()).collect()
    counts = qrels.group_by("query_id").agg(
        pl.len().cast(pl.Int64).alias("n_judged"),
        (pl.col("grade") >= 1).sum().cast(pl.Int64).alias("n_relevant"),
    )
    return (
        cells.select("query_id")
        .unique()
        .join(texts, on="query_id", how="left")
        .join(counts, on="query_id", how="left")
        .with_columns(pl.col("n_judged", "n_relevant").fill_null(0))
        .with_columns((pl.col("n_judged") > 0).alias("judged"))
        .select(QUERIES_SCHEMA.names())
        .cast(QUERIES_SCHEMA)
        .sort("query_id")
    )


def evaluate_run(
    run: RunRef,
    *,
    measures: Sequence[Measure | str] = DEFAULT_MEASURES,
    extra_judgments: Sequence[Path | str] | None = None,
    qrels: pl.DataFrame | None = None,
    objective: str = "f1",
    overlap_k: int = 10,
    judge_k: int = 10,
    judgments_store: bool = True,
) -> Evaluation:
    """Measure one run from its own files (no network): see `Evaluation` for the frames.

    `run` is a run directory or a URI (`s3://…/run_id=…`), read through the one reader.
    `extra_judgments` are TREC qrels files added to the run's own `judgments.parquet`;
    `qrels`, media-level judgments resolved already (QRELS_SCHEMA, e.g. the shared pool of a
    comparison), replace both; `objective` chooses the operating points ("f1" or
    "precision@recall>=0.5"); `overlap_k` is the depth of Jaccard in the mode overlap,
    `judge_k` the depth of the unjudged counts; `judgments_store` adds the labels given in
    `vlbench judge` (`runner.judge.labels`).

    >>> ev = evaluate_run("reports/suite=demo/run_date=2024-11-24/run_id=...")  # doctest: +SKIP
    >>> ev.summary.filter(pl.col("measure") == "nDCG@10")  # doctest: +SKIP
    """
    info = open_run(run)
    wanted = parse_measures(measures)
    if qrels is None:
        hits, qrels = load_run_judgments(info, extra_judgments, judgments_store=judgments_store)
    else:
        hits = scan_hits(info)
    requests = scan_requests(info)
    systems = _systems(hits, requests)
    cells = _cells(hits, requests)
    media = _media_rankings(hits)
    rankings = {
        "media": (
            media,
            qrels.select(
                "query_id",
                pl.lit(_MEDIA_POOL).alias("pool"),
                pl.col("media_id").alias("doc"),
                "grade",
            ),
        ),
        "cluster": (_cluster_rankings(hits), _cluster_qrels(hits, qrels)),
    }
    judged = qrels.select("query_id").unique()
    per_query = _per_query(wanted, rankings, systems, cells, judged)
    sweep = threshold_sweep(_per_query(SWEEP_MEASURES, rankings, systems, cells, judged))
    relevance = label_relevance(hits, qrels)
    return Evaluation(
        run_id=info.run_id,
        measures=tuple(str(m) for m in wanted),
        per_query=per_query,
        summary=summarise_measures(per_query),
        sweep=sweep,
        operating_points=choose_operating_point(sweep, objective),
        distributions=score_histograms(relevance),
        quantiles=score_quantiles(relevance),
        threshold_check=threshold_check(hits),
        overlap=mode_overlap(media, cells, k=overlap_k),
        wins=wins_losses(per_query),
        unjudged=count_unjudged(media, qrels, cells, k=judge_k),
        queries=_queries(requests, cells, qrels),
        qrels=qrels,
    )


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)


def write_evaluation(ev: Evaluation, run_dir: Path | str) -> tuple[Path, Path]:
    """Write `metrics.parquet` and `distributions.parquet` into the run directory, atomically.

    `metrics.parquet` (METRICS_SCHEMA) stacks `per_query` (n_queries null) and `summary`
    (query_id and judged null); `distributions.parquet` is `ev.distributions`.
    """
    run_dir = Path(run_dir)
    metrics = pl.concat([ev.per_query, ev.summary], how="diagonal").select(METRICS_SCHEMA.names())
    paths = (run_dir / METRICS_FILE, run_dir / DISTRIBUTIONS_FILE)
    _write_parquet(metrics.cast(METRICS_SCHEMA), paths[0])
    _write_parquet(ev.distributions, paths[1])
    return paths


def read_metrics(run: RunRef) -> pl.DataFrame:
    """The `metrics.parquet` of an evaluated run (METRICS_SCHEMA); means have query_id null."""
    loc = run_location(run).child(METRICS_FILE)
    try:
        table = pq.read_table(loc.path, filesystem=loc.fs)
        return pl.from_arrow(table).select(METRICS_SCHEMA.names()).cast(METRICS_SCHEMA)  # type: ignore[union-attr]
    except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        reason = scrub(str(exc))
        raise RunError(
            f"{loc.uri}: cannot read metrics (was the run evaluated?): {reason}"
        ) from None
