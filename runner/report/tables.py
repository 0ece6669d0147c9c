"""The report's tables as plain text cells, shared by the HTML, Markdown and terminal writers.

The comparison's tables are in `compare_tables`; the `Table` record and the cell formats are
in `table` (re-exported here for the callers outside the report).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import polars as pl

from runner.evaluate.evaluation import Evaluation
from runner.report.content import Headline, ReportContent, WorstQuery
from runner.report.table import DASH, Table, fmt, fmt_p, interval, make_table

__all__ = [
    "Table",
    "fmt",
    "fmt_p",
    "interval",
    "headline_table",
    "make_table",
    "operating_points_table",
    "overlap_table",
    "quantiles_table",
    "run_facts",
    "threshold_table",
    "top_hits_table",
    "unjudged_table",
    "wins_table",
    "worst_query_facts",
]


def _cutoff(value: float | None) -> str:
    return DASH if value is None else f"{value:g}"


def run_facts(content: ReportContent) -> list[tuple[str, str]]:
    """The run's identity and counts as (label, value) pairs."""
    run = content.run
    counts: Mapping[str, Any] = run.get("counts") or {}
    queries = content.ev.queries
    facts = [
        ("suite", run.get("suite_name")),
        ("run", run.get("run_id")),
        ("status", run.get("status")),
        ("started", _when(run.get("started_at"))),
        ("ended", _when(run.get("ended_at"))),
        ("dataset", run.get("dataset_id")),
        # Only for a dataset searched while READ ONLY or PARTIAL INDEX: results may shift.
        ("dataset status", run.get("dataset_caveat")),
        ("API", run.get("base_url")),
        ("shard", run.get("shard")),
        ("vlbench", run.get("tool_version")),
        (
            "requests",
            f"{fmt(counts.get('requests_done'))} done of {fmt(counts.get('requests_planned'))},"
            f" {fmt(counts.get('requests_failed'))} failed"
            if counts
            else None,
        ),
        ("hits", fmt(counts.get("hits")) if counts else None),
        ("resumed", _resumes(run.get("resumed_at"))),
        ("failed requests sent again", _retries(run.get("retries"))),
        ("queries", f"{queries.height} ({int(queries['judged'].sum())} with judgments)"),
        ("report written", _when(content.generated_at)),
    ]
    return [(label, str(value)) for label, value in facts if value not in (None, "")]


def _resumes(stamps: object) -> str | None:
    """How often the run was resumed, and when last (none: no line)."""
    if not isinstance(stamps, list) or not stamps:
        return None
    times = "once" if len(stamps) == 1 else f"{len(stamps)} times"
    return f"{times}, last {_when(stamps[-1])}"


def _retries(retries: object) -> str | None:
    """Each `--retry-failed` of the run: how many failed requests it sent again, and when."""
    if not isinstance(retries, list):
        return None
    said = [
        f"{fmt(r.get('requests'))} on {_when(r.get('at'))}"
        for r in retries
        if isinstance(r, Mapping)
    ]
    return "; ".join(said) or None


def _when(stamp: object) -> str | None:
    """An ISO timestamp as "2024-11-24 02:00:00 UTC" (other text as it is)."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        parsed = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if parsed.tzinfo else "")


def headline_table(h: Headline) -> Table:
    """A row per setting, a column per measure; the best setting of each measure marked."""
    headers = ["setting", "cut-off", "judged queries", *h.measures]
    rows, marks = [], []
    for row in h.rows:
        values = row["values"]
        rows.append(
            [
                row["setting"],
                _cutoff(row["cutoff"]),
                fmt(row["n_queries"]),
                *(fmt(values.get(m)) for m in h.measures),
            ]
        )
        marks.append(
            ["", "", "", *("best" if h.best.get(m) == row["setting"] else "" for m in h.measures)]
        )
    return make_table(headers, rows, numeric=range(1, len(headers)), marks=marks)


def operating_points_table(ev: Evaluation) -> Table:
    rows = [
        [
            r["mode"],
            r["unit"],
            r["objective"],
            r["setting"] or "none qualifies",
            _cutoff(r["cutoff"]),
            fmt(r["precision"]),
            fmt(r["recall"]),
            fmt(r["f1"]),
        ]
        for r in ev.operating_points.sort("unit", "mode", descending=[True, False]).iter_rows(
            named=True
        )
    ]
    headers = ["mode", "unit", "objective", "setting", "cut-off", "precision", "recall", "F1"]
    return make_table(headers, rows, numeric=range(4, 8))


def threshold_table(ev: Evaluation) -> Table:
    rows, marks = [], []
    for r in ev.threshold_check.iter_rows(named=True):
        bad = r["n_violations"] > 0
        rows.append(
            [
                r["mode"],
                r["setting"],
                _cutoff(r["cutoff"]),
                r["score_type"] or DASH,
                # No-break spaces: the rule reads as one token.
                f"score\u00a0{'≤' if r['direction'] == '<=' else '≥'}\u00a0cut-off",
                fmt(r["n_hits"]),
                fmt(r["n_violations"]),
                ", ".join(r["examples"] or []) or DASH,
                fmt(r["n_violations_opposite"]),
                "yes" if r["opposite_fits_better"] else "no",
            ]
        )
        marks.append(["", "", "", "", "", "", "warn" if bad else "", "", "", ""])
    headers = [
        "mode",
        "setting",
        "cut-off",
        "score type",
        "contract",
        "hits",
        "violations",
        "examples",
        "violations if read the other way",
        "other way fits better",
    ]
    return make_table(headers, rows, numeric=[2, 5, 6, 8], marks=marks)


def unjudged_table(ev: Evaluation) -> Table:
    totals = (
        ev.unjudged.group_by("mode", "setting", "k")
        .agg(
            pl.col("n_hits").sum(),
            pl.col("n_unjudged").sum(),
            (pl.col("n_unjudged") > 0).sum().alias("queries"),
        )
        .sort("mode", "setting")
    )
    rows = [
        [
            r["mode"],
            r["setting"],
            fmt(r["k"]),
            fmt(r["n_hits"]),
            fmt(r["n_unjudged"]),
            fmt(r["n_unjudged"] / r["n_hits"] if r["n_hits"] else None),
            fmt(r["queries"]),
        ]
        for r in totals.iter_rows(named=True)
    ]
    headers = ["mode", "setting", "depth k", "hits in top k", "unjudged", "share", "queries"]
    return make_table(headers, rows, numeric=range(2, 7), limit=40)


def _at(frame: pl.DataFrame, settings: Mapping[str, str] | None) -> pl.DataFrame:
    """The rows of a mode-pair frame at each mode's given setting (all rows when None)."""
    if settings is None:
        return frame
    chosen = pl.DataFrame(
        {"mode": list(settings), "setting": list(settings.values())},
        schema={"mode": pl.String, "setting": pl.String},
    )
    for side in ("a", "b"):
        frame = frame.join(
            chosen.rename({"mode": f"mode_{side}", "setting": f"setting_{side}"}),
            on=[f"mode_{side}", f"setting_{side}"],
            how="semi",
        )
    return frame


def overlap_table(ev: Evaluation, settings: Mapping[str, str] | None = None) -> Table:
    """Mean Jaccard@k and RBO per pair of settings, summed one-mode-only media.

    With `settings` (mode -> setting), only the pairs of those settings.
    """
    means = (
        _at(ev.overlap, settings)
        .group_by("mode_a", "setting_a", "mode_b", "setting_b")
        .agg(
            pl.col("jaccard").mean(),
            pl.col("rbo").mean(),
            pl.col("only_a").sum(),
            pl.col("only_b").sum(),
            pl.len().alias("queries"),
            pl.col("k").first(),
        )
        .sort("mode_a", "mode_b", "setting_a", "setting_b")
    )
    k = int(means["k"][0]) if means.height else 10
    rows = [
        [
            f"{r['mode_a']} @ {r['setting_a']}",
            f"{r['mode_b']} @ {r['setting_b']}",
            fmt(r["queries"]),
            fmt(r["jaccard"]),
            fmt(r["rbo"]),
            fmt(r["only_a"]),
            fmt(r["only_b"]),
        ]
        for r in means.iter_rows(named=True)
    ]
    headers = ["a", "b", "queries", f"Jaccard@{k}", "RBO", "media only in a", "media only in b"]
    return make_table(headers, rows, numeric=range(2, 7), limit=40)


def wins_table(ev: Evaluation, measure: str, settings: Mapping[str, str] | None = None) -> Table:
    wins = (
        _at(ev.wins, settings)
        .filter((pl.col("measure") == measure) & (pl.col("unit") == "media"))
        .sort("mode_a", "mode_b", "setting_a", "setting_b")
    )
    rows = [
        [
            f"{r['mode_a']} @ {r['setting_a']}",
            f"{r['mode_b']} @ {r['setting_b']}",
            fmt(r["wins"]),
            fmt(r["losses"]),
            fmt(r["ties"]),
            fmt(r["n_queries"]),
        ]
        for r in wins.iter_rows(named=True)
    ]
    headers = ["a", "b", "a better", "b better", "ties", "judged queries"]
    return make_table(headers, rows, numeric=range(2, 6), limit=40)


def quantiles_table(ev: Evaluation) -> Table:
    raw = ev.quantiles.filter(pl.col("scale") == "raw")
    if raw.height == 0:
        return make_table(["mode"], [])
    wide = raw.pivot(
        on="q", index=["mode", "setting", "cutoff", "score_type", "relevance"], values="value"
    ).sort("mode", "cutoff", "setting", "relevance", nulls_last=False)
    qs = [
        c for c in wide.columns if c not in ("mode", "setting", "cutoff", "score_type", "relevance")
    ]
    rows = [
        [r["mode"], r["setting"], r["score_type"] or DASH, r["relevance"], *(fmt(r[q]) for q in qs)]
        for r in wide.iter_rows(named=True)
    ]
    headers = ["mode", "setting", "score type", "judgment", *(f"q{float(q):.2f}" for q in qs)]
    return make_table(headers, rows, numeric=range(4, 4 + len(qs)), limit=60)


def worst_query_facts(query: WorstQuery) -> str:
    """One line under a worst query: its score, its judgments, where the first relevant was."""
    found = (
        f"first relevant media at rank {query.first_relevant}"
        if query.first_relevant is not None
        else "no relevant media returned"
    )
    return (
        f"{query.measure} = {fmt(query.value)}; {query.n_relevant} relevant media judged; {found}."
    )


def top_hits_table(query: WorstQuery) -> Table:
    rows, marks = [], []
    for h in query.hits:
        judgment = (
            "unjudged" if h.grade is None else ("relevant" if h.grade >= 1 else "not relevant")
        )
        rows.append(
            [
                fmt(h.rank),
                h.file_name or h.media_id,
                h.caption or DASH,
                fmt(h.raw_score),
                judgment + (f" ({h.grade})" if h.grade is not None else ""),
            ]
        )
        mark = "" if h.grade is None else ("up" if h.grade >= 1 else "down")
        marks.append(["", "", "", "", mark])
    return make_table(
        ["rank", "file", "caption", "raw score", "judgment"], rows, numeric=[0, 3], marks=marks
    )
