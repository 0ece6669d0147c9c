"""The quality sections as HTML, Markdown and summary.json, from `Quality` alone.

HTML sections (ids in `runner.report.html.SECTIONS`): "intervals", "fusion", "cutoffs"; the
noise floor, held-back gates and score shift go at the end of the comparison section.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from runner.report.sections import plots
from runner.report.sections.quality import Quality
from runner.report.table import Table, fmt, fmt_p, interval

__all__ = [
    "advice_table",
    "comparison_tables",
    "fusion_table",
    "intervals_table",
    "quality_summary",
    "shift_table",
    "render_plots",
]

_NUM_FROM = 2


def _table(headers: list[str], rows: list[list[str]], numeric_from: int = _NUM_FROM) -> Table:
    return Table(
        headers=tuple(headers),
        rows=tuple(tuple(r) for r in rows),
        numeric=frozenset(range(numeric_from, len(headers))),
    )


def intervals_table(q: Quality) -> Table:
    """Per mode at its best setting and measure: the mean and its 95% bootstrap interval."""
    rows = [
        [r["mode"], r["setting"], r["measure"], fmt(r["value"]), interval(r["ci_lo"], r["ci_hi"])]
        for r in q.best_intervals.sort("mode", "measure").iter_rows(named=True)
    ]
    return _table(["mode", "setting", "measure", "mean", "95% CI"], rows, 3)


def fusion_table(q: Quality) -> Table:
    """The best fusion against each mode alone: delta, interval, Holm p, verdict."""
    part = q.verdicts.filter(pl.col("fusion") == q.best_fusion) if q.best_fusion else q.verdicts
    rows = []
    for r in part.iter_rows(named=True):
        if r["significant"]:
            verdict = "fusion better" if r["delta"] > 0 else "fusion worse"
        else:
            verdict = "no significant difference"
        rows.append(
            [
                r["fusion"],
                f"{r['mode']} @ {r['setting']}",
                fmt(r["mean_fused"]),
                fmt(r["mean_mode"]),
                fmt(r["delta"]),
                interval(r["ci_lo"], r["ci_hi"]),
                fmt_p(r["p_holm"]),
                verdict,
            ]
        )
    headers = ["fusion", "mode alone", "fusion", "mode", "Δ", "95% CI of Δ", "p (Holm)", "verdict"]
    return Table(tuple(headers), tuple(tuple(r) for r in rows), frozenset(range(2, 7)))


def all_fusions_table(q: Quality) -> Table:
    """Every fusion tried: its settings, mean of the primary measure, interval, modes beaten."""
    beaten = (
        q.verdicts.group_by("fusion")
        .agg((pl.col("significant") & (pl.col("delta") > 0)).sum().alias("beats"), pl.len())
        .rename({"fusion": "mode"})
    )
    part = (
        q.fusion_systems.filter(pl.col("mode").str.starts_with("fused:"))
        .join(beaten, on="mode", how="left")
        .sort("value", descending=True)
    )
    settings = q.fused.settings
    rows = [
        [
            r["mode"],
            ", ".join(f"{m} @ {s}" for m, s in settings.get(r["mode"], {}).items()),
            fmt(r["value"]),
            interval(r["ci_lo"], r["ci_hi"]),
            f"{r['beats'] or 0} of {r['len'] or 0}",
        ]
        for r in part.iter_rows(named=True)
    ]
    return _table(["fusion", "fused at", "mean", "95% CI", "modes beaten (Holm)"], rows)


def advice_table(q: Quality) -> Table:
    """The advised cut-off per mode and target, with its interval and how stable it is."""
    rows = []
    for r in q.advice.iter_rows(named=True):
        other = "recall" if r["target"] == "precision" else "precision"
        if r["setting"] is None:
            advice = f"no setting reaches {r['target']} {r['level']:g}{_best_reach(q, r)}"
            rows.append([r["mode"], f"{r['target']} ≥ {r['level']:g}", advice] + ["–"] * 5)
            continue
        rows.append(
            [
                r["mode"],
                f"{r['target']} ≥ {r['level']:g}",
                f"{r['setting']} (most {other})",
                fmt(r["cutoff"], 2),
                interval(r["cutoff_lo"], r["cutoff_hi"], 2),
                f"{fmt(r['precision'])} {interval(r['precision_lo'], r['precision_hi'])}",
                f"{fmt(r['recall'])} {interval(r['recall_lo'], r['recall_hi'])}",
                f"{r['stability']:.0%}",
            ]
        )
    headers = ["mode", "target", "advice", "cut-off", "95% CI", "P", "R", "same pick"]
    return Table(tuple(headers), tuple(tuple(r) for r in rows), frozenset(range(3, 8)))


def _best_reach(q: Quality, row: Mapping[str, Any]) -> str:
    """Where a target is out of reach: the most of it any setting gets, and where."""
    curve = q.curves.filter(pl.col("mode") == row["mode"]).sort(row["target"], descending=True)
    if curve.is_empty():
        return ""
    best = curve.row(0, named=True)
    return f" (best {best[row['target']]:.3f} at {best['setting']})"


def shift_table(shift: pl.DataFrame) -> Table:
    """KS test of the raw scores of relevant and non-relevant hits, run A against run B."""
    rows = [
        [
            r["mode"],
            r["setting"],
            r["relevance"].replace("_", "-"),
            f"{r['n_a']} / {r['n_b']}",
            f"{r['median_a']:.4g} → {r['median_b']:.4g}",
            fmt(r["ks"]),
            fmt_p(r["p"]),
            "SHIFTED" if r["shifted"] else "",
        ]
        for r in shift.sort("shifted", "mode", "setting", descending=[True, False, False])
        .head(40)
        .iter_rows(named=True)
    ]
    headers = ["mode", "setting", "hits", "n A / B", "median A → B", "KS", "p", ""]
    return _table(headers, rows, 3)


def noise_table(noise: pl.DataFrame) -> Table:
    rows = [
        [
            r["mode"],
            r["setting"],
            r["measure"],
            fmt(r["max_delta"], 4),
            fmt(r["band"], 4),
            fmt(r["floor"], 4),
            str(r["n_runs"]),
        ]
        for r in noise.filter(pl.col("unit") == "media").iter_rows(named=True)
    ]
    headers = ["mode", "setting", "measure", "largest A/A Δ", "band (1.96 SE)", "floor", "runs"]
    return _table(headers, rows, 3)


def comparison_tables(q: Quality) -> list[tuple[str, str, Table | None]]:
    """(heading, note, table) of the comparison's quality parts: noise, held-back gates, shift."""
    out: list[tuple[str, str, Table | None]] = []
    opts = q.options
    if opts.noise is not None:
        held = [
            [str(h.gate), h.mode, h.setting, f"{h.delta:+.4f}", fmt_p(h.p_holm), h.reason]
            for h in opts.held
        ]
        note = (
            f"From {len(opts.noise_runs)} A/A runs ({', '.join(opts.noise_runs)}). A gate trips "
            "only when the delta is significant after Holm and larger than the floor "
            "(the larger of the biggest A/A delta and 1.96 standard errors of A/A differences)."
        )
        out.append(("Noise floor", note, noise_table(opts.noise)))
        headers = ["gate", "mode", "setting", "Δ", "p (Holm)", "held back by"]
        out.append(
            (
                "Gates held back",
                "Rows that met a gate but did not trip it, and which rule held them back.",
                _table(headers, held, 3) if held else None,
            )
        )
    if q.shift is not None:
        n = int(q.shift["shifted"].sum())
        out.append(
            (
                "Score shift of relevant and non-relevant hits",
                f"Two-sample Kolmogorov–Smirnov test of raw scores, run A against run B, judged "
                f"with both runs' judgments; {n} distributions shifted (p < 0.01). A shift of "
                "relevant hits means a cut-off no longer means what it meant.",
                shift_table(q.shift),
            )
        )
    return out


def render_plots(q: Quality, primary: str, colours: Mapping[str, str]) -> dict[str, str | None]:
    """The three plots: intervals, fusion, cut-offs."""
    return {
        "intervals": plots.interval_forest(q.best_intervals, colours),
        "fusion": plots.fusion_bars(q.fusion_systems, q.best_fusion, primary, colours),
        "cutoffs": plots.cutoff_curves(q.curves, q.advice),
    }


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None)).to_dicts()


def quality_summary(q: Quality) -> dict[str, Any]:
    """The summary.json keys: intervals, fusion, cutoff_advice, and noise/shift when compared."""
    out: dict[str, Any] = {
        "intervals": {
            "level": 0.95,
            "resamples": q.options.n_resamples,
            "seed": q.options.seed,
            "rows": _rows(q.intervals),
        },
        "fusion": {
            "best": q.best_fusion,
            "settings": q.fused.settings,
            "summary": _rows(q.fused.summary),
            "against_modes": _rows(q.verdicts),
        },
        "cutoff_advice": _rows(q.advice),
    }
    if q.options.noise is not None:
        out["noise"] = {
            "runs": list(q.options.noise_runs),
            "floors": _rows(q.options.noise),
            "held_back": [
                {
                    "gate": str(h.gate),
                    "mode": h.mode,
                    "setting": h.setting,
                    "unit": h.unit,
                    "delta": h.delta,
                    "p_holm": h.p_holm,
                    "floor": h.floor,
                    "reason": h.reason,
                }
                for h in q.options.held
            ],
        }
    if q.shift is not None:
        out["score_shift"] = _rows(q.shift)
    return out
