"""Score distributions per mode and setting, split by relevance, and the threshold check.

Histograms use FIXED bins per (score_type, scale), so the histograms of two runs align bin for
bin (see `BINS`): cosine distances on 0..2 and their normalised 1 - d on -1..1, bm25 on 0..50,
any other score type on 0..1. A value outside the range falls in an open bin (-inf, lo) or
[hi, +inf); the upper edge `hi` itself belongs to the last bin. Bins with no hit are left out.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from runner.evaluate.evaluation import (
    DISTRIBUTIONS_SCHEMA,
    QUANTILES_SCHEMA,
    THRESHOLD_CHECK_SCHEMA,
)

__all__ = [
    "BINS",
    "DEFAULT_BINS",
    "QUANTILES",
    "label_relevance",
    "score_histograms",
    "score_quantiles",
    "threshold_check",
]

# (score_type, scale) -> (lo, hi, number of bins)
BINS: Final[dict[tuple[str, str], tuple[float, float, int]]] = {
    ("cosine_distance", "raw"): (0.0, 2.0, 40),
    ("cosine_distance", "normalised"): (-1.0, 1.0, 40),
    ("cosine_similarity", "raw"): (-1.0, 1.0, 40),
    ("cosine_similarity", "normalised"): (-1.0, 1.0, 40),
    ("bm25", "raw"): (0.0, 50.0, 50),
    ("bm25", "normalised"): (0.0, 50.0, 50),
}
DEFAULT_BINS: Final = (0.0, 1.0, 20)

QUANTILES: Final = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95)

# A cut-off is honoured up to this much float noise.
_TOLERANCE: Final = 1e-9

_GROUP: Final = ["mode", "setting", "cutoff", "score_type", "relevance", "scale"]


def label_relevance(hits: pl.LazyFrame, qrels: pl.DataFrame) -> pl.LazyFrame:
    """The hits with a `relevance` column: "relevant" (grade >= 1), "non_relevant", "unjudged".

    `qrels` is media-level (QRELS_SCHEMA of `runner.evaluate.judgments`).
    """
    graded = hits.join(qrels.lazy(), on=["query_id", "media_id"], how="left")
    return graded.with_columns(
        pl.when(pl.col("grade").is_null())
        .then(pl.lit("unjudged"))
        .when(pl.col("grade") >= 1)
        .then(pl.lit("relevant"))
        .otherwise(pl.lit("non_relevant"))
        .alias("relevance")
    ).drop("grade")


def _long_scores(hits: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (hit, scale) with its score `x`; hits without a score are left out."""
    base: list[str | pl.Expr] = [
        "mode",
        "setting",
        "cutoff",
        pl.col("score_type").fill_null("unknown"),
        "relevance",
    ]
    raw = hits.select(*base, pl.lit("raw").alias("scale"), pl.col("raw_score").alias("x"))
    norm = hits.select(*base, pl.lit("normalised").alias("scale"), pl.col("score").alias("x"))
    return pl.concat([raw, norm]).drop_nulls("x")


def _bins_table(pairs: pl.DataFrame) -> pl.DataFrame:
    rows = [(t, s, *BINS.get((t, s), DEFAULT_BINS)) for t, s in pairs.iter_rows()]
    return pl.DataFrame(
        rows,
        schema={
            "score_type": pl.String,
            "scale": pl.String,
            "lo": pl.Float64,
            "hi": pl.Float64,
            "n": pl.Int64,
        },
        orient="row",
    )


def score_histograms(hits: pl.LazyFrame) -> pl.DataFrame:
    """Histograms (DISTRIBUTIONS_SCHEMA) of raw and normalised scores of `label_relevance` hits."""
    scores = _long_scores(hits)
    table = _bins_table(scores.select("score_type", "scale").unique().collect())
    x, lo, hi, n = pl.col("x"), pl.col("lo"), pl.col("hi"), pl.col("n")
    step = (hi - lo) / n
    index = (
        pl.when(x < lo)
        .then(-1)
        .when(x > hi)
        .then(n)
        .when(x == hi)
        .then(n - 1)
        .otherwise(((x - lo) / step).floor().cast(pl.Int64).clip(0, n - 1))
    )
    counted = (
        scores.join(table.lazy(), on=["score_type", "scale"], how="left")
        .with_columns(index.alias("i"))
        .group_by([*_GROUP, "i", "lo", "hi", "n"])
        .agg(pl.len().cast(pl.Int64).alias("count"))
    )
    i = pl.col("i")
    edges = counted.with_columns(
        pl.when(i < 0).then(float("-inf")).otherwise((lo + i * step).round(12)).alias("bin_lo"),
        pl.when(i >= n)
        .then(float("inf"))
        .otherwise((lo + (i + 1) * step).round(12))
        .alias("bin_hi"),
    )
    return (
        edges.select(DISTRIBUTIONS_SCHEMA.names())
        .cast(DISTRIBUTIONS_SCHEMA)
        .sort([*_GROUP, "bin_lo"], nulls_last=True)
        .collect()
    )


def score_quantiles(hits: pl.LazyFrame, quantiles: tuple[float, ...] = QUANTILES) -> pl.DataFrame:
    """Quantiles (QUANTILES_SCHEMA, linear interpolation) of `label_relevance` hits' scores."""
    names = [f"{q:.2f}" for q in quantiles]
    wide = (
        _long_scores(hits)
        .group_by(_GROUP)
        .agg(
            pl.col("x").quantile(q, interpolation="linear").alias(name)
            for q, name in zip(quantiles, names, strict=True)
        )
    )
    long = wide.unpivot(index=_GROUP, on=names, variable_name="q", value_name="value")
    return (
        long.with_columns(pl.col("q").cast(pl.Float64))
        .select(QUANTILES_SCHEMA.names())
        .cast(QUANTILES_SCHEMA)
        .sort([*_GROUP, "q"], nulls_last=True)
        .collect()
    )


def threshold_check(hits: pl.LazyFrame, *, max_examples: int = 5) -> pl.DataFrame:
    """Does every hit honour the cut-off its request asked for? (THRESHOLD_CHECK_SCHEMA)

    Checked for the settings with a cut-off and hits with a raw score. The contract's reading
    (`direction`): a `cosine_distance` (or any `*distance`) keeps raw_score <= cutoff, any
    other score type raw_score >= cutoff. `examples` are up to `max_examples` media ids of the
    violations, the furthest beyond the cut-off first. Because the API documentation is
    ambiguous about direction, the same count is made for the opposite reading;
    `opposite_fits_better` is set when that reading has fewer violations.
    """
    checked = hits.filter(pl.col("cutoff").is_not_null() & pl.col("raw_score").is_not_null())
    is_distance = pl.col("score_type").fill_null("").str.ends_with("distance")
    beyond = (
        pl.when(is_distance)
        .then(pl.col("raw_score") - pl.col("cutoff"))
        .otherwise(pl.col("cutoff") - pl.col("raw_score"))
    )
    marked = checked.with_columns(
        beyond.alias("_beyond"),
        pl.when(is_distance).then(pl.lit("<=")).otherwise(pl.lit(">=")).alias("direction"),
    )
    violating = pl.col("_beyond") > _TOLERANCE
    summary = (
        marked.sort("_beyond", descending=True)
        .group_by("mode", "setting", "cutoff", "score_type", "direction")
        .agg(
            pl.len().cast(pl.Int64).alias("n_hits"),
            violating.sum().cast(pl.Int64).alias("n_violations"),
            pl.col("media_id")
            .filter(violating)
            .unique(maintain_order=True)
            .head(max_examples)
            .alias("examples"),
            (pl.col("_beyond") < -_TOLERANCE).sum().cast(pl.Int64).alias("n_violations_opposite"),
        )
        .with_columns(
            (pl.col("n_violations_opposite") < pl.col("n_violations")).alias("opposite_fits_better")
        )
    )
    return (
        summary.select(THRESHOLD_CHECK_SCHEMA.names())
        .cast(THRESHOLD_CHECK_SCHEMA)
        .sort("mode", "cutoff", "setting")
        .collect()
    )
