"""How two modes of one run differ (fts versus semantic, or any two): overlap and wins.

Per query and per pair of settings (one of each mode), at the media level:
- Jaccard@k = |A@k & B@k| / |A@k | B@k| of the top-k media sets; null when both are empty.
- RBO: rank-biased overlap, the EXTRAPOLATED variant RBO_ext of Webber, Moffat and Zobel (2010,
  "A similarity measure for indefinite rankings", eq. 32), p = 0.9, over the whole returned
  lists, which may differ in length. With S the shorter list (length s), L the longer (l), and
  X_d = |S@d & L@d|:
      RBO_ext = (1-p)/p * (sum_{d=1..l} X_d/d p^d + sum_{d=s+1..l} X_s (d-s)/(s d) p^d)
                + ((X_l - X_s)/l + X_s/s) p^l
  It is 1 for identical lists and 0 for disjoint ones; it assumes the unseen tail agrees as
  well as the seen part does (the min variant RBO_min would assume it disagrees). Null when both
  lists are empty, 0 when only one is.
- only_a / only_b: media returned by one mode and not by the other at that setting pair, with
  up to three examples, best-ranked first (examples come from the first 50 of each list).
- wins / losses / ties: per measure, over judged queries, how often mode a scored above,
  below or equal to mode b (values within 1e-12 are ties).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

import numpy as np
import polars as pl

from runner.evaluate.evaluation import OVERLAP_SCHEMA, WINS_SCHEMA
from runner.evaluate.measures import parse_measure

__all__ = ["RBO_P", "jaccard_at", "mode_overlap", "mode_pairs", "rbo", "wins_losses"]

RBO_P: Final = 0.9
_TIE: Final = 1e-12
_EXAMPLE_DEPTH: Final = 50


def rbo(a: Sequence[str], b: Sequence[str], p: float = RBO_P) -> float | None:
    """RBO_ext of two rankings without repeats, computed term by term (the module's formula)."""
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    s, ell = len(short), len(long)  # s and l of the formula
    if ell == 0:
        return None
    if s == 0:
        return 0.0

    def overlap(d: int) -> int:
        return len(set(short[:d]) & set(long[:d]))

    x_s, x_l = overlap(s), overlap(ell)
    head = sum(overlap(d) / d * p**d for d in range(1, ell + 1))
    tail = sum(x_s * (d - s) / (s * d) * p**d for d in range(s + 1, ell + 1))
    return (1 - p) / p * (head + tail) + ((x_l - x_s) / ell + x_s / s) * p**ell


def jaccard_at(a: Sequence[str], b: Sequence[str], k: int) -> float | None:
    """|A@k & B@k| / |A@k | B@k|; None when both are empty."""
    top_a, top_b = set(a[:k]), set(b[:k])
    union = top_a | top_b
    return len(top_a & top_b) / len(union) if union else None


def mode_pairs(modes: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of distinct modes, each once, in name order ("fts" before "semantic")."""
    return list(itertools.combinations(sorted(set(modes)), 2))


def _lookup(n: int, p: float) -> pl.DataFrame:
    """H(d) = sum_{i<=d} p^i / i and G(d) = sum_{i<=d} p^i for d = 0..n."""
    d = np.arange(1, n + 1, dtype=np.float64)
    powers = p**d
    h = np.concatenate([[0.0], np.cumsum(powers / d)])
    g = np.concatenate([[0.0], np.cumsum(powers)])
    return pl.DataFrame({"d": np.arange(0, n + 1, dtype=np.int64), "H": h, "G": g})


def _with_lookup(
    frame: pl.LazyFrame, table: pl.LazyFrame, column: str, suffix: str
) -> pl.LazyFrame:
    renamed = table.rename({"d": column, "H": f"H{suffix}", "G": f"G{suffix}"})
    return frame.join(renamed, on=column, how="left")


def _rbo_expr(p: float) -> pl.Expr:
    s, ell, x_s, x_l = pl.col("s"), pl.col("l"), pl.col("x_s"), pl.col("common")
    head = x_l * pl.col("Hl") - pl.col("sum_h")  # sum_d X_d p^d / d, item by item
    tail = x_s * ((pl.col("Gl") - pl.col("Gs")) / s - (pl.col("Hl") - pl.col("Hs")))
    value = (1 - p) / p * (head + tail) + ((x_l - x_s) / ell + x_s / s) * pl.lit(p).pow(ell)
    return pl.when(ell == 0).then(None).when(s == 0).then(0.0).otherwise(value)


def _examples(
    mine: pl.LazyFrame, their_cells: pl.LazyFrame, common: pl.LazyFrame, side: str, n: int
) -> pl.LazyFrame:
    """Up to n media of one side's list absent from the other's, per setting pair and query."""
    keys = ["setting_a", "setting_b", "query_id"]
    other = "b" if side == "a" else "a"
    top = mine.filter(pl.col(f"pos_{side}") <= _EXAMPLE_DEPTH).join(
        their_cells.select(f"setting_{other}", "query_id"), on="query_id"
    )
    only = top.join(common.select(*keys, "doc"), on=[*keys, "doc"], how="anti")
    return (
        only.sort(f"pos_{side}")
        .group_by(keys)
        .agg(pl.col("doc").head(n).alias(f"only_{side}_examples"))
    )


def _pair_overlap(
    lists: pl.LazyFrame,
    lengths: pl.LazyFrame,
    pair: tuple[str, str],
    k: int,
    p: float,
    table: pl.LazyFrame,
    n: int,
) -> pl.LazyFrame:
    keys = ["setting_a", "setting_b", "query_id"]
    sides = {}
    lens = {}
    for side, mode in zip("ab", pair, strict=True):
        sides[side] = lists.filter(pl.col("mode") == mode).select(
            pl.col("setting").alias(f"setting_{side}"),
            "query_id",
            "doc",
            pl.col("pos").alias(f"pos_{side}"),
        )
        lens[side] = lengths.filter(pl.col("mode") == mode).select(
            pl.col("setting").alias(f"setting_{side}"), "query_id", pl.col("n").alias(f"n_{side}")
        )
    cells = (
        lens["a"]
        .join(lens["b"], on="query_id")
        .with_columns(
            pl.min_horizontal("n_a", "n_b").alias("s"), pl.max_horizontal("n_a", "n_b").alias("l")
        )
    )
    common = (
        sides["a"]
        .join(sides["b"], on=["query_id", "doc"])
        .with_columns((pl.max_horizontal("pos_a", "pos_b") - 1).alias("m1"))
    )
    stats = (
        _with_lookup(common.join(cells.select(*keys, "s"), on=keys), table, "m1", "m")
        .group_by(keys)
        .agg(
            pl.len().cast(pl.Int64).alias("common"),
            ((pl.col("pos_a") <= k) & (pl.col("pos_b") <= k))
            .sum()
            .cast(pl.Int64)
            .alias("common_k"),
            (pl.col("m1") < pl.col("s")).sum().cast(pl.Int64).alias("x_s"),
            pl.col("Hm").sum().alias("sum_h"),
        )
    )
    joined = cells.join(stats, on=keys, how="left").with_columns(
        pl.col("common", "common_k", "x_s").fill_null(0), pl.col("sum_h").fill_null(0.0)
    )
    joined = _with_lookup(_with_lookup(joined, table, "l", "l"), table, "s", "s")
    top_a, top_b = pl.min_horizontal("n_a", pl.lit(k)), pl.min_horizontal("n_b", pl.lit(k))
    union = top_a + top_b - pl.col("common_k")
    result = joined.with_columns(
        pl.lit(pair[0]).alias("mode_a"),
        pl.lit(pair[1]).alias("mode_b"),
        pl.lit(k, dtype=pl.Int64).alias("k"),
        pl.when(union > 0).then(pl.col("common_k") / union).alias("jaccard"),
        _rbo_expr(p).alias("rbo"),
        (pl.col("n_a") - pl.col("common")).alias("only_a"),
        (pl.col("n_b") - pl.col("common")).alias("only_b"),
    )
    for side, other in (("a", "b"), ("b", "a")):
        found = _examples(sides[side], lens[other], common, side, n)
        result = result.join(found, on=keys, how="left").with_columns(
            pl.col(f"only_{side}_examples").fill_null(pl.lit([], dtype=pl.List(pl.String)))
        )
    return result.select(OVERLAP_SCHEMA.names())


def mode_overlap(
    ranked: pl.DataFrame,
    cells: pl.DataFrame,
    *,
    k: int = 10,
    p: float = RBO_P,
    pairs: Sequence[tuple[str, str]] | None = None,
    n_examples: int = 3,
) -> pl.DataFrame:
    """Overlap of every pair of modes (OVERLAP_SCHEMA), per query and setting pair, vectorised.

    `ranked`: `mode, setting, query_id, doc, rank` (media rankings, docs unique per ranking);
    `cells`: `mode, setting, query_id` of every ranking asked for, empty ones included.
    `pairs` default to `mode_pairs` of the modes in `cells`. Ranks are taken as positions
    after ordering (a gap left by a lost page closes up).
    """
    keys = ["mode", "setting", "query_id"]
    lists = ranked.lazy().with_columns(
        pl.col("rank").rank("ordinal").over(keys).cast(pl.Int64).alias("pos")
    )
    counts = lists.group_by(keys).agg(pl.len().cast(pl.Int64).alias("n"))
    lengths = (
        cells.lazy()
        .select(keys)
        .unique()
        .join(counts, on=keys, how="left")
        .with_columns(pl.col("n").fill_null(0))
    )
    longest = int(lengths.select(pl.col("n").max()).collect().item() or 0)
    table = _lookup(longest, p).lazy()
    chosen = mode_pairs(cells["mode"].to_list()) if pairs is None else list(pairs)
    frames = [_pair_overlap(lists, lengths, pair, k, p, table, n_examples) for pair in chosen]
    if not frames:
        return pl.DataFrame(schema=OVERLAP_SCHEMA)
    result = pl.concat(frames).collect()
    return result.cast(OVERLAP_SCHEMA).sort(
        "mode_a", "mode_b", "setting_a", "setting_b", "query_id"
    )


def wins_losses(
    per_query: pl.DataFrame,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    measures: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Per-query wins, losses and ties of mode a against mode b (WINS_SCHEMA).

    From `per_query` (PER_QUERY_SCHEMA), judged queries only, at every pair of settings and
    both units. `measures` default to those in `per_query` that need judgments.
    """
    names = (
        per_query["measure"].unique(maintain_order=True).to_list()
        if measures is None
        else list(measures)
    )
    names = [name for name in names if parse_measure(name).needs_judgments]
    judged = per_query.filter(
        pl.col("judged") & pl.col("measure").is_in(names) & pl.col("value").is_not_null()
    )
    chosen = mode_pairs(per_query["mode"].to_list()) if pairs is None else list(pairs)
    frames = []
    for mode_a, mode_b in chosen:
        sides = [
            judged.filter(pl.col("mode") == mode).select(
                pl.col("setting").alias(f"setting_{side}"),
                "unit",
                "query_id",
                "measure",
                pl.col("value").alias(side),
            )
            for side, mode in (("a", mode_a), ("b", mode_b))
        ]
        paired = sides[0].join(sides[1], on=["unit", "query_id", "measure"])
        diff = pl.col("a") - pl.col("b")
        frames.append(
            paired.group_by("setting_a", "setting_b", "unit", "measure")
            .agg(
                (diff > _TIE).sum().alias("wins"),
                (diff < -_TIE).sum().alias("losses"),
                (diff.abs() <= _TIE).sum().alias("ties"),
                pl.len().alias("n_queries"),
            )
            .with_columns(pl.lit(mode_a).alias("mode_a"), pl.lit(mode_b).alias("mode_b"))
            .select(WINS_SCHEMA.names())
            .cast(WINS_SCHEMA)
        )
    if not frames:
        return pl.DataFrame(schema=WINS_SCHEMA)
    return pl.concat(frames).sort("mode_a", "mode_b", "setting_a", "setting_b", "unit", "measure")
