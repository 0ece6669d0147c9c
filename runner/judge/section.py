"""The report's "Raters and agreement" section: who graded what, how far they agree, and how
the headline measures move when each rater's labels are used alone.

It shows only when the run's judgments store holds labels (`vlbench judge`). "Alone" means
the run evaluated with the suite's judgments, the extra qrels files and that one rater's labels,
instead of the consensus of all raters; the measures are the primary measure (and P@10, Judged@10)
at each mode's best setting by the primary measure.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import polars as pl

from runner.evaluate.evaluation import Evaluation
from runner.evaluate.run import evaluate_run
from runner.judge.agreement import Agreement, agreement
from runner.judge.labels import (
    GRADES,
    consensus,
    qrels_text,
    read_log,
    standing_labels,
    store_dir,
)
from runner.judge.plot import grade_matrices
from runner.report.content import primary_measure
from runner.report.sections.extra import ExtraSection
from runner.report.tables import Table, fmt

__all__ = ["agreement_section"]

_ALSO: Final = ("P@10", "Judged@10")
_PER_QUERY_ROWS: Final = 40


def _best_settings(ev: Evaluation, measure: str) -> dict[str, str]:
    rows = (
        ev.summary.filter((pl.col("unit") == "media") & (pl.col("measure") == measure))
        .drop_nulls("value")
        .sort(["mode", "value", "setting"], descending=[False, True, False])
        .unique("mode", keep="first", maintain_order=True)
    )
    return dict(rows.select("mode", "setting").iter_rows())


def _means(
    ev: Evaluation, best: dict[str, str], measures: Sequence[str]
) -> dict[tuple[str, str], Any]:
    media = ev.summary.filter(pl.col("unit") == "media")
    return {
        (mode, measure): value
        for mode, setting, measure, value in media.select(
            "mode", "setting", "measure", "value"
        ).iter_rows()
        if best.get(mode) == setting and measure in measures
    }


def _alone(
    run_dir: Path,
    ev: Evaluation,
    standing: pl.DataFrame,
    extra_judgments: Sequence[Path | str] | None,
) -> list[dict[str, Any]]:
    """Per rater, mode and measure: the mean with all raters' consensus and with theirs alone."""
    primary = primary_measure(ev.measures)
    measures = [primary, *(m for m in _ALSO if m in ev.measures and m != primary)]
    best = _best_settings(ev, primary)
    together = _means(ev, best, measures)
    out = []
    with tempfile.TemporaryDirectory(prefix="vlbench-rater-") as tmp:
        for (rater,), grades in standing.group_by("rater", maintain_order=True):
            path = Path(tmp) / f"{rater}.qrels"
            path.write_bytes(qrels_text(grades))
            own = evaluate_run(
                run_dir,
                measures=ev.measures,
                extra_judgments=[*(extra_judgments or ()), path],
                judgments_store=False,
            )
            theirs = _means(own, best, measures)
            for mode in sorted(best):
                for measure in measures:
                    if (mode, measure) in together:
                        out.append(_row(rater, mode, best[mode], measure, together, theirs))
    return out


def _row(
    rater: str,
    mode: str,
    setting: str,
    measure: str,
    together: dict[tuple[str, str], Any],
    theirs: dict[tuple[str, str], Any],
) -> dict[str, Any]:
    value, alone = together[(mode, measure)], theirs.get((mode, measure))
    return {
        "rater": rater,
        "mode": mode,
        "setting": setting,
        "measure": measure,
        "all_raters": value,
        "alone": alone,
        "delta": None if alone is None or value is None else alone - value,
    }


def _raters_table(standing: pl.DataFrame, log: pl.DataFrame) -> Table:
    counts = standing.group_by("rater", "grade").len()
    rows = []
    for rater in sorted(set(standing["rater"].to_list()) | set(log["rater"].to_list())):
        mine = counts.filter(pl.col("rater") == rater)
        by_grade = dict(mine.select("grade", "len").iter_rows())
        times = log.filter(pl.col("rater") == rater)["time"]
        rows.append(
            (
                rater,
                fmt(int(mine["len"].sum())),
                *(fmt(int(by_grade.get(g, 0))) for g in GRADES),
                str(times.min())[:19] if times.len() else "",
                str(times.max())[:19] if times.len() else "",
            )
        )
    headers = ("rater", "labels", *(f"grade {g}" for g in GRADES), "first", "last")
    return Table(headers, tuple(rows), numeric=frozenset(range(1, 2 + len(GRADES))))


def _agreement_table(result: Agreement) -> Table:
    row = (
        ", ".join(result.raters),
        fmt(result.n_items),
        fmt(result.kappa) if len(result.raters) == 2 else "per pair below",
        fmt(result.alpha),
    )
    headers = ("raters", "items graded by 2+", "Cohen's κ", "Krippendorff's α (ordinal)")
    return Table(headers, (row,), numeric=frozenset({1, 2, 3}))


def _pairs_table(result: Agreement) -> Table:
    rows = [(p.rater_a, p.rater_b, fmt(p.n_items), fmt(p.kappa)) for p in result.pairs]
    headers = ("rater", "and rater", "items both graded", "Cohen's κ")
    return Table(headers, tuple(rows), numeric=frozenset({2, 3}))


def _per_query_table(result: Agreement, texts: dict[str, str]) -> Table:
    rows = [
        (q, texts.get(q) or "", fmt(n), fmt(kappa), fmt(alpha))
        for q, n, kappa, alpha in result.per_query.sort("query_id").iter_rows()
    ]
    note = ""
    if len(rows) > _PER_QUERY_ROWS:
        note = f"{len(rows) - _PER_QUERY_ROWS} more queries in summary.json."
        rows = rows[:_PER_QUERY_ROWS]
    headers = ("query", "text", "items", "κ", "α")
    return Table(headers, tuple(rows), numeric=frozenset({2, 3, 4}), note=note)


def _alone_table(alone: list[dict[str, Any]]) -> Table:
    rows = [
        (
            r["rater"],
            f"{r['mode']} @ {r['setting']}",
            r["measure"],
            fmt(r["all_raters"]),
            fmt(r["alone"]),
            "" if r["delta"] is None else f"{r['delta']:+.3f}",
        )
        for r in alone
    ]
    headers = ("rater", "mode @ best setting", "measure", "all raters", "this rater alone", "Δ")
    return Table(headers, tuple(rows), numeric=frozenset({3, 4, 5}))


def agreement_section(
    run_dir: Path, ev: Evaluation, extra_judgments: Sequence[Path | str] | None
) -> ExtraSection | None:
    """The section, or None when no rater has labelled anything for this suite."""
    store = store_dir(run_dir)
    log = read_log(store)
    if log.is_empty():
        return None
    standing = standing_labels(log)
    result = agreement(standing)
    texts = dict(ev.queries.select("query_id", "query_text").iter_rows())
    notes = [
        f"Labels given in `vlbench judge`, from {store} (the judgments store of the suite). "
        f"{consensus(standing).height} media graded; where raters differ the measures use "
        "the lower median of their grades.",
    ]
    tables: list[tuple[str, Table]] = [("Raters", _raters_table(standing, log))]
    plots: list[str] = []
    alone: list[dict[str, Any]] = []
    if len(result.raters) >= 2:
        notes.append(
            "Agreement over the media graded by two or more raters: Cohen's κ for two "
            "raters (unweighted), Krippendorff's α with the ordinal metric for any number; "
            "a dash where it is undefined (fewer than two items, or no variation)."
        )
        plots = [svg for svg in (grade_matrices(standing),) if svg is not None]
        tables.append(("Agreement", _agreement_table(result)))
        if len(result.raters) > 2:
            tables.append(("Cohen's κ of each pair of raters", _pairs_table(result)))
        tables.append(("Agreement per query", _per_query_table(result, texts)))
        alone = _alone(Path(run_dir), ev, standing, extra_judgments)
        tables.append(("Each rater's labels alone", _alone_table(alone)))
    else:
        notes.append("One rater so far: agreement needs a second (`vlbench judge --overlap`).")
    summary = {
        "store": str(store),
        "raters": list(result.raters),
        "media_graded": consensus(standing).height,
        "items_graded_by_two_or_more": result.n_items,
        "kappa": result.kappa,
        "alpha_ordinal": result.alpha,
        "pairs": [
            {"raters": [p.rater_a, p.rater_b], "n_items": p.n_items, "kappa": p.kappa}
            for p in result.pairs
        ],
        "per_query": result.per_query.to_dicts(),
        "alone": alone,
    }
    return ExtraSection(
        key="raters",
        title="Raters and agreement",
        notes=tuple(notes),
        plots=tuple(plots),
        tables=tuple(tables),
        summary=summary,
    )
