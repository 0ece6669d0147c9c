"""A comparison's tables (run B against run A) as plain text cells: the verdict, the
regressions, rank displacement and score drift. Rendered by the HTML, Markdown and terminal
writers alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import polars as pl

from runner.evaluate.compare import Comparison
from runner.report.content import higher_is_better
from runner.report.table import DASH, DOWN, UP, Table, fmt, fmt_p, interval, make_table

__all__ = ["displacement_table", "drift_table", "regressions_table", "verdict_table"]


def _delta_cell(delta: float | None, significant: bool) -> str:
    if delta is None or math.isnan(delta):
        return DASH
    if delta == 0:
        return "= 0.000"
    arrow = UP if delta > 0 else DOWN
    return f"{arrow} {delta:+.3f}{' *' if significant else ''}"


def verdict_table(cmp: Comparison, unit: str = "media", order: Sequence[str] = ()) -> Table:
    """Per (mode, setting, measure): A, B, the delta with ▲/▼ and * when significant, p, d_z.

    Measures of one setting in `order` (e.g. the evaluation's), any others after them.
    """
    rank = {m: i for i, m in enumerate(order)}
    part = (
        cmp.measures.filter(pl.col("unit") == unit)
        .with_columns(
            pl.col("measure")
            .replace_strict(rank, default=len(rank), return_dtype=pl.Int64)
            .alias("_order")
        )
        .sort("mode", "cutoff", "setting", "_order", "measure", nulls_last=False)
    )
    rows, marks = [], []
    for r in part.iter_rows(named=True):
        sig = bool(r["significant"])
        delta = r["delta"]
        direction = ""
        if sig and higher_is_better(r["measure"]) and delta is not None and delta != 0:
            direction = "up" if delta > 0 else "down"
        rows.append(
            [
                r["mode"],
                r["setting"],
                r["measure"],
                fmt(r["mean_a"]),
                fmt(r["mean_b"]),
                _delta_cell(delta, sig),
                interval(r.get("ci_lo"), r.get("ci_hi")),
                fmt_p(r["p_randomisation_holm"]),
                fmt_p(r["p_t_holm"]),
                fmt(r["effect_size"], 2),
                fmt(r["n_pairs"]),
                f"{r['n_only_a']} / {r['n_only_b']}",
            ]
        )
        marks.append(["", "", "", "", "", direction, "", "", "", "", "", ""])
    headers = [
        "mode",
        "setting",
        "measure",
        "A",
        "B",
        "Δ (B − A)",
        "95% CI of Δ",
        "p randomisation (Holm)",
        "p t-test (Holm)",
        "d_z",
        "pairs",
        "unpaired A / B",
    ]
    return make_table(headers, rows, numeric=range(3, 12), marks=marks)


def regressions_table(
    cmp: Comparison, measure: str, texts: Mapping[str, str | None], limit: int = 15
) -> Table:
    worst = cmp.regressions.filter(
        (pl.col("measure") == measure) & (pl.col("unit") == "media")
    ).sort("delta", "mode", "setting", "query_id")
    rows = [
        [
            r["mode"],
            r["setting"],
            r["query_id"],
            texts.get(r["query_id"]) or DASH,
            fmt(r["value_a"]),
            fmt(r["value_b"]),
            f"{r['delta']:+.3f}",
        ]
        for r in worst.iter_rows(named=True)
    ]
    headers = ["mode", "setting", "query", "text", f"{measure} A", f"{measure} B", "Δ"]
    return make_table(headers, rows, numeric=range(4, 7), limit=limit)


def displacement_table(cmp: Comparison) -> Table:
    summary = (
        cmp.displacement.group_by("mode", "setting")
        .agg(
            pl.len().alias("queries"),
            (~pl.col("judged")).sum().alias("unjudged"),
            pl.col("rbo").mean(),
            pl.col("jaccard").mean(),
            pl.col("mean_abs_rank_change").mean(),
            ((pl.col("n_common") == 0) & ((pl.col("n_a") > 0) | (pl.col("n_b") > 0)))
            .sum()
            .alias("disjoint"),
        )
        .sort("mode", "setting")
    )
    rows = [
        [
            r["mode"],
            r["setting"],
            fmt(r["queries"]),
            fmt(r["unjudged"]),
            fmt(r["rbo"]),
            fmt(r["jaccard"]),
            fmt(r["mean_abs_rank_change"], 2),
            fmt(r["disjoint"]),
        ]
        for r in summary.iter_rows(named=True)
    ]
    headers = [
        "mode",
        "setting",
        "queries",
        "unjudged queries",
        "mean RBO",
        "mean Jaccard@10",
        "mean |rank change|",
        "queries with nothing in common",
    ]
    return make_table(headers, rows, numeric=range(2, 8), limit=40)


def drift_table(cmp: Comparison) -> Table:
    if cmp.drift.height == 0:
        return make_table(["mode"], [])
    wide = cmp.drift.pivot(
        on="q", index=["mode", "setting", "n_a", "n_b", "ks", "p_ks"], values="shift"
    ).sort("mode", "setting")
    qs = [c for c in wide.columns if c not in ("mode", "setting", "n_a", "n_b", "ks", "p_ks")]
    rows = [
        [
            r["mode"],
            r["setting"],
            fmt(r["n_a"]),
            fmt(r["n_b"]),
            fmt(r["ks"]),
            fmt_p(r["p_ks"]),
            *(_signed(r[q]) for q in qs),
        ]
        for r in wide.iter_rows(named=True)
    ]
    headers = [
        "mode",
        "setting",
        "hits A",
        "hits B",
        "KS statistic",
        "p (KS)",
        *(f"shift q{float(q):.2f}" for q in qs),
    ]
    return make_table(headers, rows, numeric=range(2, 6 + len(qs)), limit=40)


def _signed(value: float | None) -> str:
    return DASH if value is None or math.isnan(value) else f"{value:+.3f}"
