"""Cut-off advice: the swept threshold that reaches a target precision (or recall) with the most
of the other, with a bootstrap interval; and whether relevant and non-relevant scores shifted.

    pr = setting_pr(run_dir)                                # per query set P and R per setting
    advice = advise_cutoffs(pr, target="precision", level=0.8)
    shift = score_shift(run_a, run_b)                       # two nights, KS on raw scores

Precision and recall are the sweep's (`runner.evaluate.sweep`): set measures over everything a
setting returned, macro-averaged over the judged queries, 0 for a query that returned nothing.
For a target precision p*, the advised setting is the one with macro P >= p* and the highest
macro R (ties: the higher P, then the first in cut-off order); for a target recall, the other
way round. Only modes with two or more cut-offs are advised (fts has none).

The interval: the judged queries are drawn with replacement `n_resamples` times (seeded), the
choice is made again on each draw, and the interval of the cut-off is the central `level` of
the chosen cut-offs (the grid's own values); `stability` is the share of draws that chose the
advised one. Precision and recall at the advised setting get percentile intervals the same way.
A draw where no setting reaches the target chooses none; `reach` is the share that chose one.

Score shift: per (mode, setting, relevance) the raw scores of run A's and run B's hits, judged
against the union of both runs' judgments, and a two-sample Kolmogorov-Smirnov test; `shifted`
when p < alpha. An embedding model changed on the service moves the relevant and non-relevant
distributions before any threshold visibly fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl
from scipy import stats

from runner.errors import UsageError
from runner.evaluate.bootstrap import DEFAULT_RESAMPLES, FloatArray, bootstrap_means
from runner.evaluate.distributions import label_relevance
from runner.evaluate.fusion import media_rankings
from runner.evaluate.judgments import load_run_judgments
from runner.evaluate.measures import Measure, compute_measures
from runner.store import scan_hits, scan_requests
from runner.store.reader import RunRef

__all__ = [
    "ADVICE_SCHEMA",
    "CURVE_SCHEMA",
    "SHIFT_SCHEMA",
    "advise_cutoffs",
    "score_shift",
    "setting_pr",
]

_TARGETS: Final = ("precision", "recall")

# One row per mode with a swept cut-off.
ADVICE_SCHEMA: Final = pl.Schema(
    {
        "mode": pl.String,
        "target": pl.String,  # "precision" or "recall": the measure that must reach `level`
        "level": pl.Float64,
        "setting": pl.String,  # the advised setting; null when no setting reaches the target
        "cutoff": pl.Float64,
        "precision": pl.Float64,
        "recall": pl.Float64,
        "cutoff_lo": pl.Float64,  # central interval of the cut-offs chosen over the draws
        "cutoff_hi": pl.Float64,
        "precision_lo": pl.Float64,
        "precision_hi": pl.Float64,
        "recall_lo": pl.Float64,
        "recall_hi": pl.Float64,
        "stability": pl.Float64,  # share of draws that chose the advised setting
        "reach": pl.Float64,  # share of draws where some setting reached the target
        "n_queries": pl.Int64,
    }
)

# The curve the advice is read from: macro P and R per setting with their intervals.
CURVE_SCHEMA: Final = pl.Schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "cutoff": pl.Float64,
        "precision": pl.Float64,
        "recall": pl.Float64,
        "precision_lo": pl.Float64,
        "precision_hi": pl.Float64,
        "recall_lo": pl.Float64,
        "recall_hi": pl.Float64,
    }
)

_PR_SCHEMA: Final = pl.Schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "cutoff": pl.Float64,
        "query_id": pl.String,
        "P": pl.Float64,
        "R": pl.Float64,
    }
)

SHIFT_SCHEMA: Final = pl.Schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "relevance": pl.String,  # "relevant" or "non_relevant"
        "score_type": pl.String,
        "n_a": pl.Int64,
        "n_b": pl.Int64,
        "median_a": pl.Float64,
        "median_b": pl.Float64,
        "ks": pl.Float64,  # the largest gap between the two empirical distribution functions
        "p": pl.Float64,
        "shifted": pl.Boolean,
    }
)


def setting_pr(
    run_dir: RunRef, *, extra_judgments: Sequence[Path | str] | None = None
) -> pl.DataFrame:
    """Per judged query, set precision and recall at every (mode, setting) with a cut-off.

    Columns: mode, setting, cutoff, query_id, P, R. A query asked at a setting that returned
    nothing has P = R = 0 there.
    """
    hits, qrels = load_run_judgments(run_dir, extra_judgments)
    keys = ["mode", "setting", "query_id"]
    requests = scan_requests(run_dir)
    cutoffs = (
        pl.concat(
            [
                requests.select("mode", "setting", pl.col("cutoff").cast(pl.Float64)),
                hits.select("mode", "setting", pl.col("cutoff").cast(pl.Float64)),
            ]
        )
        .group_by("mode", "setting")
        .agg(pl.col("cutoff").drop_nulls().first())
        .collect()
    )
    pool = pl.lit("").alias("pool")
    ranked = media_rankings(hits)
    asked = pl.concat([requests.select(keys).collect(), ranked.select(keys)]).unique()
    values = compute_measures(
        ranked.with_columns(pool),
        qrels.select("query_id", pool, pl.col("media_id").alias("doc"), "grade"),
        (Measure("P"), Measure("R")),
        cells=asked.with_columns(pool),
        judged=qrels.select("query_id").unique(),
    )
    judged = values.filter(pl.col("judged"))
    if judged.is_empty():  # no judgments: no precision or recall to advise on
        return pl.DataFrame(schema=_PR_SCHEMA)
    wide = judged.pivot(on="measure", index=["mode", "setting", "query_id"], values="value")
    return (
        wide.join(cutoffs, on=["mode", "setting"], how="inner")
        .filter(pl.col("cutoff").is_not_null())
        .select(_PR_SCHEMA.names())
        .cast(_PR_SCHEMA)
        .sort("mode", "cutoff", "setting", "query_id")
    )


def _choose(precision: FloatArray, recall: FloatArray, target: str, level: float) -> FloatArray:
    """Per row (a draw), the index of the advised setting, or -1; columns are the settings."""
    need, gain = (precision, recall) if target == "precision" else (recall, precision)
    eligible = need >= level - 1e-12
    # Most of the other measure; ties to the higher target measure, then the first setting.
    score = np.where(eligible, gain + 1e-9 * need, -np.inf)
    best = score.argmax(axis=1).astype(np.float64)
    return np.where(eligible.any(axis=1), best, -1.0)


def _interval(values: FloatArray, level: float) -> tuple[float, float]:
    if values.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail], method="inverted_cdf")
    return float(lo), float(hi)


def advise_cutoffs(
    pr: pl.DataFrame,
    *,
    target: str = "precision",
    level: float = 0.8,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    interval: float = 0.95,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The advice per mode (ADVICE_SCHEMA) and the curves it is read from (CURVE_SCHEMA).

    `pr` as `setting_pr` gives it; `target` is "precision" or "recall", `level` in (0, 1].
    Raises `UsageError` for another target or a level out of range.
    """
    if target not in _TARGETS:
        raise UsageError(f"cut-off target {target!r}: use precision or recall")
    if not 0.0 < level <= 1.0:
        raise UsageError(f"target {target} {level:g}: must be within (0, 1]")
    advice: list[dict[str, object]] = []
    curves: list[pl.DataFrame] = []
    for (mode,), part in pr.group_by("mode", maintain_order=True):
        settings = part.select("setting", "cutoff").unique().sort("cutoff", "setting")
        if settings.height < 2:
            continue
        wide_p = part.pivot(on="setting", index="query_id", values="P").sort("query_id")
        wide_r = part.pivot(on="setting", index="query_id", values="R").sort("query_id")
        names = settings["setting"].to_list()
        p_mat = wide_p.select(names).fill_null(0.0).to_numpy().astype(np.float64)
        r_mat = wide_r.select(names).fill_null(0.0).to_numpy().astype(np.float64)
        both = np.concatenate([p_mat, r_mat], axis=1)
        draws = bootstrap_means(both, n_resamples=n_resamples, seed=seed)
        d_p, d_r = draws[:, : len(names)], draws[:, len(names) :]
        point_p, point_r = p_mat.mean(axis=0), r_mat.mean(axis=0)
        cut = np.asarray(settings["cutoff"].to_list(), dtype=np.float64)
        curves.append(_curve(str(mode), names, cut, point_p, point_r, d_p, d_r, interval))
        chosen = int(_choose(point_p[None, :], point_r[None, :], target, level)[0])
        picks = _choose(d_p, d_r, target, level)
        reached = picks[picks >= 0].astype(np.int64)
        row: dict[str, object] = {
            "mode": mode,
            "target": target,
            "level": level,
            "reach": reached.size / picks.size,
            "n_queries": p_mat.shape[0],
        }
        lo, hi = _interval(cut[reached], interval)
        row.update(cutoff_lo=lo, cutoff_hi=hi)
        if chosen >= 0:
            p_lo, p_hi = _interval(d_p[:, chosen], interval)
            r_lo, r_hi = _interval(d_r[:, chosen], interval)
            row.update(
                setting=names[chosen],
                cutoff=float(cut[chosen]),
                precision=float(point_p[chosen]),
                recall=float(point_r[chosen]),
                precision_lo=p_lo,
                precision_hi=p_hi,
                recall_lo=r_lo,
                recall_hi=r_hi,
                stability=float((picks == chosen).mean()),
            )
        advice.append(row)
    advice_frame = pl.DataFrame(
        [{name: row.get(name) for name in ADVICE_SCHEMA.names()} for row in advice],
        schema=ADVICE_SCHEMA,
        orient="row",
    ).with_columns(pl.col(pl.Float64).fill_nan(None))
    curve = pl.concat(curves) if curves else pl.DataFrame(schema=CURVE_SCHEMA)
    return advice_frame, curve


def _curve(
    mode: str,
    names: list[str],
    cut: FloatArray,
    point_p: FloatArray,
    point_r: FloatArray,
    d_p: FloatArray,
    d_r: FloatArray,
    interval: float,
) -> pl.DataFrame:
    p_bounds = [_interval(d_p[:, i], interval) for i in range(len(names))]
    r_bounds = [_interval(d_r[:, i], interval) for i in range(len(names))]
    return pl.DataFrame(
        {
            "mode": [mode] * len(names),
            "setting": names,
            "cutoff": cut.tolist(),
            "precision": point_p.tolist(),
            "recall": point_r.tolist(),
            "precision_lo": [b[0] for b in p_bounds],
            "precision_hi": [b[1] for b in p_bounds],
            "recall_lo": [b[0] for b in r_bounds],
            "recall_hi": [b[1] for b in r_bounds],
        },
        schema=CURVE_SCHEMA,
    )


def _scores(run: RunRef, qrels: pl.DataFrame) -> pl.DataFrame:
    return (
        label_relevance(scan_hits(run), qrels)
        .filter((pl.col("relevance") != "unjudged") & pl.col("raw_score").is_not_null())
        .select("mode", "setting", "relevance", "score_type", "raw_score")
        .collect()
    )


def score_shift(
    run_a: RunRef,
    run_b: RunRef,
    *,
    extra_judgments: Sequence[Path | str] | None = None,
    alpha: float = 0.01,
) -> pl.DataFrame:
    """Per (mode, setting, relevance) both runs share: KS test of A's raw scores against B's.

    Both runs are judged with the union of their judgments (SHIFT_SCHEMA rows, sorted).
    """
    dirs = (run_a, run_b)
    qrels = (
        pl.concat([load_run_judgments(d, extra_judgments)[1] for d in dirs])
        .group_by("query_id", "media_id")
        .agg(pl.col("grade").max())
    )
    a, b = (_scores(d, qrels) for d in dirs)
    keys = ["mode", "setting", "relevance"]
    rows = []
    grouped_b = {tuple(k): part for k, part in b.group_by(keys, maintain_order=True)}
    for key, part_a in a.sort(keys).group_by(keys, maintain_order=True):
        part_b = grouped_b.get(tuple(key))
        if part_b is None:
            continue
        x, y = part_a["raw_score"].to_numpy(), part_b["raw_score"].to_numpy()
        result = stats.ks_2samp(x, y)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "score_type": part_a["score_type"][0],
                "n_a": x.size,
                "n_b": y.size,
                "median_a": float(np.median(x)),
                "median_b": float(np.median(y)),
                "ks": float(result.statistic),
                "p": float(result.pvalue),
                "shifted": bool(result.pvalue < alpha),
            }
        )
    return (
        pl.DataFrame(rows, schema=SHIFT_SCHEMA, orient="row")
        if rows
        else pl.DataFrame(schema=SHIFT_SCHEMA)
    )
