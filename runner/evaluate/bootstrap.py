"""Bootstrap confidence intervals over queries: of a mean, and of a paired difference of means.

Percentile bootstrap (Efron): draw the n queries with replacement `n_resamples` times from a
seeded generator, take the mean of each draw, and read the interval off the (1 - level) / 2 and
(1 + level) / 2 quantiles of those means. Paired: the per-query differences d = b - a are what is
drawn (a query's two values travel together), so the interval is that of mean(d), and it
excludes 0 about when a paired test rejects.

Every group with the same number of queries is resampled with the same draws (one multinomial
count matrix, one matrix product), so the intervals of the measures of one setting come from the
same resampled query sets, and the same seed gives the same intervals on any machine.
A group of one query has a zero-width interval; a group of none has NaN bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from runner.errors import UsageError

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "INTERVALS_SCHEMA",
    "bootstrap_ci",
    "bootstrap_intervals",
    "bootstrap_means",
    "paired_bootstrap_ci",
    "summary_intervals",
]

FloatArray = npt.NDArray[np.float64]

DEFAULT_RESAMPLES: Final = 2000
DEFAULT_LEVEL: Final = 0.95
_CHUNK_CELLS: Final = 4_000_000  # resamples x queries per count matrix: bounds memory (~32 MB)

# One row per (mode, setting, unit, measure): the mean over its queries and its interval.
INTERVALS_SCHEMA: Final = pl.Schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "unit": pl.String,
        "measure": pl.String,
        "value": pl.Float64,  # the mean over the queries the measure is defined on
        "ci_lo": pl.Float64,
        "ci_hi": pl.Float64,
        "n_queries": pl.Int64,
    }
)


def _check(n_resamples: int, level: float) -> None:
    if n_resamples < 1:
        raise UsageError(f"bootstrap resamples must be at least 1, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise UsageError(f"confidence level must be within (0, 1), got {level:g}")


def bootstrap_means(columns: FloatArray, *, n_resamples: int, seed: int) -> FloatArray:
    """Means of `n_resamples` resamples of the rows of `columns` (n queries x g groups).

    Returns an (n_resamples x g) array: row r holds every group's mean over resample r, the
    same drawn queries for every group.
    """
    n = columns.shape[0]
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.full((n_resamples, columns.shape[1]), math.nan)
    chunk = max(1, _CHUNK_CELLS // n)
    out = []
    left = n_resamples
    while left > 0:
        size = min(chunk, left)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        out.append(counts @ columns / n)
        left -= size
    return np.concatenate(out, axis=0)


def _bounds(means: FloatArray, level: float) -> tuple[FloatArray, FloatArray]:
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail], axis=0)
    return lo, hi


def bootstrap_ci(
    values: Sequence[float] | FloatArray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values` (one value a query).

    >>> bootstrap_ci([0.0, 1.0, 1.0, 0.5], seed=0)  # doctest: +SKIP
    (0.25, 1.0)
    """
    _check(n_resamples, level)
    column = np.asarray(values, dtype=np.float64)[:, None]
    lo, hi = _bounds(bootstrap_means(column, n_resamples=n_resamples, seed=seed), level)
    return float(lo[0]), float(hi[0])


def paired_bootstrap_ci(
    a: Sequence[float] | FloatArray,
    b: Sequence[float] | FloatArray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> tuple[float, float]:
    """The interval of mean(b - a) over paired queries (a[i] and b[i] are the same query)."""
    # Imported here: the compare package imports this module for its verdict table.
    from runner.evaluate.compare.significance import differences

    return bootstrap_ci(differences(a, b), n_resamples=n_resamples, seed=seed, level=level)


def bootstrap_intervals(
    groups: Sequence[FloatArray],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> list[tuple[float, float]]:
    """`bootstrap_ci` of many groups at once; groups with the same size share their draws."""
    _check(n_resamples, level)
    by_n: dict[int, list[int]] = {}
    for index, values in enumerate(groups):
        by_n.setdefault(values.size, []).append(index)
    out = [(math.nan, math.nan)] * len(groups)
    for n, indices in by_n.items():
        if n == 0:
            continue
        columns = np.stack([groups[i] for i in indices], axis=1)
        lo, hi = _bounds(bootstrap_means(columns, n_resamples=n_resamples, seed=seed), level)
        for j, i in enumerate(indices):
            out[i] = (float(lo[j]), float(hi[j]))
    return out


def summary_intervals(
    per_query: pl.DataFrame,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> pl.DataFrame:
    """The mean and its interval of every (mode, setting, unit, measure) of a per-query frame.

    `per_query` has PER_QUERY_SCHEMA's columns; values that are null (a measure that needs
    judgments, on a query without) are left out, as the summary's means leave them out.
    Queries are taken in query-id order, so equal seeds draw equal query sets.
    """
    keys = ["mode", "setting", "unit", "measure"]
    grouped = (
        per_query.filter(pl.col("value").is_not_null())
        .sort("query_id")
        .group_by(keys, maintain_order=True)
        .agg(pl.col("value"))
        .sort(keys)
    )
    arrays = [np.asarray(v, dtype=np.float64) for v in grouped["value"].to_list()]
    bounds = bootstrap_intervals(arrays, n_resamples=n_resamples, seed=seed, level=level)
    return (
        grouped.select(keys)
        .with_columns(
            pl.Series("value", [float(a.mean()) for a in arrays], dtype=pl.Float64),
            pl.Series("ci_lo", [b[0] for b in bounds], dtype=pl.Float64),
            pl.Series("ci_hi", [b[1] for b in bounds], dtype=pl.Float64),
            pl.Series("n_queries", [a.size for a in arrays], dtype=pl.Int64),
        )
        .select(INTERVALS_SCHEMA.names())
        .cast(INTERVALS_SCHEMA)
    )
