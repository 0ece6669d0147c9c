"""The hybrid what-if: modes fused per query from the stored hits, scored like a real mode.

    f = parse_fusion("rrf(fts,semantic)")          # or Fusion("combmnz", ("caption", "fts"))
    fused = evaluate_fusions(run_dir, [f], settings={"fts": "default", "semantic": "st=0.6"})
    fused.summary                                  # SUMMARY_SCHEMA, mode "fused:rrf(fts,semantic)"

Each mode contributes its media-level ranking at one setting (a media returned twice keeps its
best rank and that hit's normalised score, higher is better). Per query:
- `rrf` (reciprocal rank fusion, Cormack et al. 2009): score(d) = sum over modes of
  1 / (k + rank_m(d)), k = 60 unless given;
- `combsum` (Fox and Shaw 1993): the sum over modes of the min-max normalised score,
  (s - min) / max(max - min, 1e-9) over that mode's ranking of the query;
- `combmnz`: combsum times the number of modes that returned d.
A mode that did not return d adds nothing. The fused ranking orders by score, then by the best
rank d had in any mode, then by media id. These are ranx's definitions (a test holds the two
equal). The fused system is then measured by `compute_measures` over the same judgments and the
same queries as its modes: a query any of its modes was asked is scored, 0 if none returned it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from runner.errors import UsageError
from runner.evaluate.bootstrap import bootstrap_intervals
from runner.evaluate.compare.significance import (
    FloatArray,
    differences,
    holm,
    randomisation_tests,
)
from runner.evaluate.evaluation import PER_QUERY_SCHEMA, SUMMARY_SCHEMA
from runner.evaluate.judgments import load_run_judgments
from runner.evaluate.measures import DEFAULT_MEASURES, Measure, compute_measures, parse_measures
from runner.evaluate.run import summarise_measures
from runner.store import scan_requests
from runner.store.reader import RunRef

__all__ = [
    "DEFAULT_K",
    "FUSION_METHODS",
    "VERDICTS_SCHEMA",
    "Fused",
    "Fusion",
    "best_fusion",
    "default_fusions",
    "evaluate_fusions",
    "fuse",
    "fusion_verdicts",
    "media_rankings",
    "parse_fusion",
]

FUSION_METHODS: Final = ("rrf", "combsum", "combmnz")
DEFAULT_K: Final = 60
_MIN_SPAN: Final = 1e-9  # ranx's floor of a min-max denominator: one hit normalises to 0
_SPELLING: Final = re.compile(r"^\s*(?:fused:)?([A-Za-z]+)\s*\((.*)\)\s*$")
_SYSTEM: Final = ["mode", "setting"]

# A fused system against one mode alone on one measure (`fusion_verdicts`).
VERDICTS_SCHEMA: Final = pl.Schema(
    {
        "fusion": pl.String,  # the fused mode, e.g. "fused:rrf(fts,semantic)"
        "mode": pl.String,  # the mode alone
        "setting": pl.String,  # at this setting
        "measure": pl.String,
        "n_pairs": pl.Int64,
        "mean_fused": pl.Float64,
        "mean_mode": pl.Float64,
        "delta": pl.Float64,  # mean(fused - mode) over paired queries
        "in_fusion": pl.Boolean,  # whether the mode is one of the fused ones
        "ci_lo": pl.Float64,
        "ci_hi": pl.Float64,
        "p": pl.Float64,  # paired randomisation test
        "p_holm": pl.Float64,  # Holm across every row
        "significant": pl.Boolean,
    }
)


@dataclass(frozen=True, slots=True)
class Fusion:
    """A fusion of two or more modes: `method` (rrf, combsum, combmnz), `modes`, rrf's `k`.

    `str()` is the spelling `parse_fusion` reads back, e.g. `rrf(fts,semantic)`, with `,k=N`
    when k is not 60; `name` is the synthetic mode, `fused:rrf(fts,semantic)`.
    """

    method: str
    modes: tuple[str, ...]
    k: int = DEFAULT_K

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise UsageError(
                f"fusion method {self.method!r}: use one of {', '.join(FUSION_METHODS)}"
            )
        if len(set(self.modes)) < 2 or len(set(self.modes)) != len(self.modes):
            raise UsageError(f"fusion {self.method}: needs two or more different modes")
        if self.k < 1:
            raise UsageError(f"fusion {self.method}: k must be at least 1, got {self.k}")

    def __str__(self) -> str:
        k = f",k={self.k}" if self.method == "rrf" and self.k != DEFAULT_K else ""
        return f"{self.method}({','.join(self.modes)}{k})"

    @property
    def name(self) -> str:
        return f"fused:{self}"


@dataclass(frozen=True, slots=True)
class Fused:
    """The fused systems of a run: per-query values (PER_QUERY_SCHEMA) and their means.

    `settings` maps each fused mode's name to the setting of each of its modes.
    """

    per_query: pl.DataFrame
    summary: pl.DataFrame
    settings: dict[str, dict[str, str]]
    fusions: tuple[Fusion, ...]


def parse_fusion(text: str) -> Fusion:
    """Read `rrf(fts,semantic)`, `rrf(fts,semantic,k=10)`, `combmnz(caption,fts,semantic)`.

    Case of the method is ignored; a leading `fused:` is allowed. Raises `UsageError`.
    """
    match = _SPELLING.match(text)
    if match is None:
        raise UsageError(
            f"cannot read fusion {text!r}: expected METHOD(MODE,MODE[,k=N]), e.g. rrf(fts,semantic)"
        )
    modes: list[str] = []
    k = DEFAULT_K
    for part in (p.strip() for p in match[2].split(",")):
        if part.startswith("k="):
            try:
                k = int(part[2:])
            except ValueError:
                raise UsageError(
                    f"fusion {text!r}: k must be an integer, got {part[2:]!r}"
                ) from None
        elif part:
            modes.append(part)
    try:
        return Fusion(match[1].lower(), tuple(modes), k)
    except UsageError as exc:
        raise UsageError(f"fusion {text!r}: {exc}") from None


def default_fusions(
    modes: Sequence[str], queries: Mapping[str, set[str]] | None = None
) -> tuple[Fusion, ...]:
    """Every method over every pair of modes, and over all of them when there are three or more.

    With `queries` (each mode's query ids), only modes that answer a query in common are fused:
    a visual-search mode, asked by anchors, has nothing to fuse with the text modes.
    """

    def shared(group: tuple[str, ...]) -> bool:
        return queries is None or bool(set.intersection(*(queries.get(m, set()) for m in group)))

    names = sorted(set(modes))
    groups = [tuple(pair) for pair in itertools.combinations(names, 2)]
    if len(names) >= 3:
        groups.append(tuple(names))
    groups = [g for g in groups if shared(g)]
    return tuple(Fusion(method, group) for group in groups for method in FUSION_METHODS)


def media_rankings(hits: pl.LazyFrame) -> pl.DataFrame:
    """mode, setting, query_id, doc, rank, score: each media once, at its best rank."""
    keys = [*_SYSTEM, "query_id"]
    return (
        hits.sort([*keys, "rank", "media_id"])
        .group_by([*keys, "media_id"], maintain_order=True)
        .agg(pl.col("rank").first().cast(pl.Int64), pl.col("score").first().cast(pl.Float64))
        .select(*keys, pl.col("media_id").alias("doc"), "rank", "score")
        .collect()
    )


def _contribution(part: pl.DataFrame, fusion: Fusion) -> pl.Expr:
    if fusion.method == "rrf":
        return 1.0 / (fusion.k + pl.col("rank").cast(pl.Float64))
    low = pl.col("score").min().over("query_id")
    span = pl.max_horizontal(pl.col("score").max().over("query_id") - low, pl.lit(_MIN_SPAN))
    return (pl.col("score") - low) / span


def fuse(rankings: pl.DataFrame, fusion: Fusion, settings: Mapping[str, str]) -> pl.DataFrame:
    """One fused ranking per query: query_id, doc, rank (1-based), score; see the module doc.

    `rankings` as `media_rankings` gives them; `settings` names the setting of each mode.
    Raises `UsageError` for a mode without a setting.
    """
    parts = []
    for mode in fusion.modes:
        if mode not in settings:
            raise UsageError(f"fusion {fusion}: no setting chosen for mode {mode!r}")
        part = rankings.filter((pl.col("mode") == mode) & (pl.col("setting") == settings[mode]))
        parts.append(
            part.with_columns(pl.col("score").fill_null(0.0)).select(
                "query_id", "doc", "rank", _contribution(part, fusion).alias("_s")
            )
        )
    stacked = pl.concat(parts)
    fused = stacked.group_by("query_id", "doc").agg(
        pl.col("_s").sum().alias("score"),
        pl.len().alias("_n"),
        pl.col("rank").min().alias("_best"),
    )
    if fusion.method == "combmnz":
        fused = fused.with_columns(pl.col("score") * pl.col("_n"))
    return (
        fused.sort(["query_id", "score", "_best", "doc"], descending=[False, True, False, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("query_id").cast(pl.Int64).alias("rank"))
        .select("query_id", "doc", "rank", "score")
    )


def _label(fusion: Fusion, settings: Mapping[str, str]) -> str:
    return "+".join(f"{mode}@{settings[mode]}" for mode in fusion.modes)


def evaluate_fusions(
    run_dir: RunRef,
    fusions: Sequence[Fusion],
    settings: Mapping[str, str],
    *,
    measures: Sequence[Measure | str] = DEFAULT_MEASURES,
    extra_judgments: Sequence[Path | str] | None = None,
) -> Fused:
    """Fuse and measure each fusion whose modes the run has (others are left out).

    `settings` gives the setting each mode is fused at (e.g. its best by the report's primary
    measure). The fused system's `setting` is the modes' settings joined, `fts@default+...`;
    `cutoff` is null. Media level only.
    """
    hits, qrels = load_run_judgments(run_dir, extra_judgments)
    rankings = media_rankings(hits)
    present = set(rankings["mode"].unique().to_list())
    usable = tuple(f for f in fusions if set(f.modes) <= present and set(f.modes) <= set(settings))
    keys = [*_SYSTEM, "query_id"]
    asked = pl.concat(
        [scan_requests(run_dir).select(keys).collect(), rankings.select(keys)]
    ).unique()
    ranked_parts, cell_parts, labels = [], [], {}
    for fusion in dict.fromkeys(usable):
        label = _label(fusion, settings)
        labels[fusion.name] = {mode: settings[mode] for mode in fusion.modes}
        system = [pl.lit(fusion.name).alias("mode"), pl.lit(label).alias("setting")]
        ranked_parts.append(fuse(rankings, fusion, settings).select(*system, pl.all()))
        mine = pl.any_horizontal(
            (pl.col("mode") == m) & (pl.col("setting") == settings[m]) for m in fusion.modes
        )
        cell_parts.append(asked.filter(mine).select(*system, "query_id").unique())
    if not ranked_parts:
        empty = pl.DataFrame(schema=PER_QUERY_SCHEMA)
        return Fused(empty, pl.DataFrame(schema=SUMMARY_SCHEMA), {}, ())
    pool = pl.lit("").alias("pool")
    per_query = compute_measures(
        pl.concat(ranked_parts).with_columns(pool),
        qrels.select("query_id", pool, pl.col("media_id").alias("doc"), "grade"),
        parse_measures(measures),
        cells=pl.concat(cell_parts).with_columns(pool),
        judged=qrels.select("query_id").unique(),
    )
    per_query = (
        per_query.with_columns(
            pl.lit(None, dtype=pl.Float64).alias("cutoff"), pl.lit("media").alias("unit")
        )
        .select(PER_QUERY_SCHEMA.names())
        .cast(PER_QUERY_SCHEMA)
    )
    return Fused(per_query, summarise_measures(per_query), labels, tuple(dict.fromkeys(usable)))


def fusion_verdicts(
    per_query: pl.DataFrame,
    fused: Fused,
    settings: Mapping[str, str],
    measure: str,
    *,
    n_permutations: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pl.DataFrame:
    """Each fused system against each mode alone at its setting, on `measure` (VERDICTS_SCHEMA).

    `per_query` holds the modes' values (an Evaluation's `per_query`). Queries are paired by id
    where both have a value; delta = mean(fused - mode) with its paired bootstrap interval and
    a paired randomisation test, Holm-corrected across every row of the table.
    """

    def values(frame: pl.DataFrame, mode: str, setting: str) -> pl.DataFrame:
        return frame.filter(
            (pl.col("mode") == mode)
            & (pl.col("setting") == setting)
            & (pl.col("unit") == "media")
            & (pl.col("measure") == measure)
            & pl.col("value").is_not_null()
        ).select("query_id", "value")

    rows: list[dict[str, object]] = []
    arrays: list[tuple[FloatArray, FloatArray]] = []
    for name, fused_settings in fused.settings.items():
        label = "+".join(f"{m}@{s}" for m, s in fused_settings.items())
        mine = values(fused.per_query, name, label)
        for mode, setting in sorted(settings.items()):
            joined = values(per_query, mode, setting).join(mine, on="query_id", suffix="_f")
            joined = joined.sort("query_id")
            a = joined["value"].to_numpy().astype(np.float64)
            b = joined["value_f"].to_numpy().astype(np.float64)
            arrays.append((a, b))
            rows.append(
                {
                    "fusion": name,
                    "mode": mode,
                    "setting": setting,
                    "measure": measure,
                    "n_pairs": a.size,
                    "mean_fused": float(b.mean()) if a.size else math.nan,
                    "mean_mode": float(a.mean()) if a.size else math.nan,
                    "delta": float(differences(a, b).mean()) if a.size else math.nan,
                    "in_fusion": mode in fused_settings,
                }
            )
    p = randomisation_tests(arrays, n_permutations=n_permutations, seed=seed)
    bounds = bootstrap_intervals([differences(a, b) for a, b in arrays], seed=seed)
    p_holm = holm(p)
    for row, p_r, p_h, (lo, hi) in zip(rows, p, p_holm, bounds, strict=True):
        row.update(ci_lo=lo, ci_hi=hi, p=p_r, p_holm=p_h, significant=p_h < alpha)
    return (
        pl.DataFrame(rows, schema=VERDICTS_SCHEMA, orient="row")
        if rows
        else pl.DataFrame(schema=VERDICTS_SCHEMA)
    )


def best_fusion(fused: Fused, measure: str) -> str | None:
    """The fused mode with the highest mean of `measure`; ties to the first name in order."""
    means = fused.summary.filter(
        (pl.col("measure") == measure) & pl.col("value").is_not_null()
    ).sort(["value", "mode"], descending=[True, False])
    return None if means.is_empty() else str(means["mode"][0])
