"""What two runs returned, compared without judgments: rank displacement and score drift."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import polars as pl
from scipy import stats

__all__ = [
    "DISPLACEMENT_SCHEMA",
    "DRIFT_QUANTILES",
    "DRIFT_SCHEMA",
    "rank_displacement",
    "score_drift",
]

# One row per (mode, setting, query) returned by either run (media level).
DISPLACEMENT_SCHEMA: Final = pl.Schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "query_id": pl.String,
        "judged": pl.Boolean,  # the query has judgments in both runs
        "n_a": pl.Int64,  # media returned by A within the depth
        "n_b": pl.Int64,
        "n_common": pl.Int64,
        "rbo": pl.Float64,  # extrapolated RBO, null when both are empty
        "jaccard": pl.Float64,  # of the top k, null when both are empty
        "mean_abs_rank_change": pl.Float64,  # over the common media, null when none
    }
)

# One row per (mode, setting) with scores in either run.
DRIFT_SCHEMA: Final = pl.Schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "n_a": pl.Int64,
        "n_b": pl.Int64,
        "ks": pl.Float64,  # two-sample Kolmogorov-Smirnov statistic, null when a side is empty
        "p_ks": pl.Float64,
        "q": pl.Float64,
        "quantile_a": pl.Float64,
        "quantile_b": pl.Float64,
        "shift": pl.Float64,  # quantile_b - quantile_a
    }
)

DRIFT_QUANTILES: Final = (0.1, 0.25, 0.5, 0.75, 0.9)


def _rbo(a: Sequence[str], b: Sequence[str], p: float) -> float:
    """`runner.evaluate.overlap.rbo` (RBO_ext) in one pass: O(l) where that is O(l^2).

    With s the shorter and l the longer length and X_d the overlap of the first d items of
    each (the short list whole once d > s):
    RBO_ext = (1-p)/p * (sum_{d=1..l} X_d/d p^d + sum_{d=s+1..l} X_s (d-s)/(s d) p^d)
              + ((X_l - X_s)/l + X_s/s) p^l.
    Both lists non-empty and without repeats (the caller sees to it).
    """
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    s, length = len(short), len(long_)
    seen_short: set[str] = set()
    seen_long: set[str] = set()
    overlap = 0
    weighted = 0.0
    x_s = 0
    for d in range(1, length + 1):
        item_l = long_[d - 1]
        if d <= s:
            item_s = short[d - 1]
            # X_d grows by the new items that meet an earlier item of the other list, or each other.
            overlap += (item_s in seen_long) + (item_l in seen_short) + (item_s == item_l)
            seen_short.add(item_s)
            seen_long.add(item_l)
            if d == s:
                x_s = overlap
        else:
            overlap += item_l in seen_short
            weighted += x_s * (d - s) / (s * d) * p**d
        weighted += overlap / d * p**d
    ext = ((overlap - x_s) / length + x_s / s) * p**length
    return float((1 - p) / p * weighted + ext)


def _ranked_lists(hits: pl.LazyFrame | pl.DataFrame, depth: int) -> pl.DataFrame:
    """(mode, setting, query_id, media: list) best first, each media once, at most `depth`."""
    return (
        hits.lazy()
        .select("mode", "setting", "query_id", "media_id", "rank")
        .group_by("mode", "setting", "query_id", "media_id")
        .agg(pl.col("rank").min())
        .sort("rank", "media_id")
        .group_by("mode", "setting", "query_id", maintain_order=True)
        .agg(pl.col("media_id").head(depth).alias("media"))
        .collect()
    )


def rank_displacement(
    hits_a: pl.LazyFrame | pl.DataFrame,
    hits_b: pl.LazyFrame | pl.DataFrame,
    *,
    depth: int = 100,
    k: int = 10,
    p: float = 0.9,
    judged: Iterable[str] = (),
) -> pl.DataFrame:
    """How far B's rankings moved from A's, per (mode, setting, query): DISPLACEMENT_SCHEMA.

    Media level, each ranking cut to its first `depth` media. `rbo` is RBO_ext with `p`
    (`runner.evaluate.overlap.rbo`: null when both are empty, 0 when one is),
    `jaccard` is |A@k & B@k| / |A@k | B@k|, and `mean_abs_rank_change` the mean of
    |rank_A(m) - rank_B(m)| over the media m both returned (ranks are positions, 1-based).
    `judged` names the queries flagged as judged.
    """
    lists = _ranked_lists(hits_a, depth).join(
        _ranked_lists(hits_b, depth),
        on=["mode", "setting", "query_id"],
        how="full",
        coalesce=True,
        suffix="_b",
    )
    judged_set = set(judged)
    rows = []
    for row in lists.sort("mode", "setting", "query_id").iter_rows(named=True):
        a: list[str] = row["media"] or []
        b: list[str] = row["media_b"] or []
        pos_a = {m: i for i, m in enumerate(a, start=1)}
        pos_b = {m: i for i, m in enumerate(b, start=1)}
        common = pos_a.keys() & pos_b.keys()
        top_a, top_b = set(a[:k]), set(b[:k])
        union = top_a | top_b
        rows.append(
            {
                "mode": row["mode"],
                "setting": row["setting"],
                "query_id": row["query_id"],
                "judged": row["query_id"] in judged_set,
                "n_a": len(a),
                "n_b": len(b),
                "n_common": len(common),
                "rbo": None if not (a or b) else (_rbo(a, b, p) if a and b else 0.0),
                "jaccard": len(top_a & top_b) / len(union) if union else None,
                "mean_abs_rank_change": (
                    sum(abs(pos_a[m] - pos_b[m]) for m in common) / len(common) if common else None
                ),
            }
        )
    return pl.DataFrame(rows, schema=DISPLACEMENT_SCHEMA)


def score_drift(
    hits_a: pl.LazyFrame | pl.DataFrame,
    hits_b: pl.LazyFrame | pl.DataFrame,
    *,
    quantiles: Sequence[float] = DRIFT_QUANTILES,
) -> pl.DataFrame:
    """Shift of the normalised score distribution per (mode, setting): DRIFT_SCHEMA, one row per q.

    `ks` is the two-sample Kolmogorov-Smirnov statistic sup |F_A(x) - F_B(x)| with its p-value
    (`scipy.stats.ks_2samp`); `shift` = quantile_B(q) - quantile_A(q) (linear interpolation).
    """
    keys = ["mode", "setting"]

    def scores(hits: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
        return (
            hits.lazy()
            .select(*keys, "score")
            .drop_nulls("score")
            .filter(pl.col("score").is_finite())
            .group_by(keys)
            .agg(pl.col("score"))
            .collect()
        )

    joined = scores(hits_a).join(scores(hits_b), on=keys, how="full", coalesce=True, suffix="_b")
    rows = []
    for row in joined.sort(keys).iter_rows(named=True):
        a = np.asarray(row["score"] or [], dtype=np.float64)
        b = np.asarray(row["score_b"] or [], dtype=np.float64)
        ks = p_ks = None
        if a.size and b.size:
            result = stats.ks_2samp(a, b)
            ks, p_ks = float(result.statistic), float(result.pvalue)
        for q in quantiles:
            qa = float(np.quantile(a, q)) if a.size else None
            qb = float(np.quantile(b, q)) if b.size else None
            rows.append(
                {
                    "mode": row["mode"],
                    "setting": row["setting"],
                    "n_a": int(a.size),
                    "n_b": int(b.size),
                    "ks": ks,
                    "p_ks": p_ks,
                    "q": q,
                    "quantile_a": qa,
                    "quantile_b": qb,
                    "shift": None if qa is None or qb is None else qb - qa,
                }
            )
    return pl.DataFrame(rows, schema=DRIFT_SCHEMA)
