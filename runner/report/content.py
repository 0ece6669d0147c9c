"""What a report says, gathered once from a run and its Evaluation; the renderers only format it.

`gather(run, ev, ...)` reads the manifest and the hits (for the worst queries' top hits; marked
relevant from the judgments the Evaluation carries, never resolved again) and
picks what each section shows: the headline per mode (every setting, best per measure marked),
the worst queries at each mode's best setting, the comparison if any. Everything the HTML,
Markdown and JSON writers need is here, so the three never disagree.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl

from runner.api.contract import CONTRACT_KEY, Finding, findings_from_dicts
from runner.errors import RunError
from runner.evaluate.compare import Comparison, Gate, GateFailure
from runner.evaluate.evaluation import Evaluation
from runner.evaluate.measures import parse_measure
from runner.report.sections.extra import ExtraSection, extra_sections
from runner.report.sections.quality import Quality, QualityOptions, gather_quality
from runner.store import public_base_url
from runner.store.reader import RunInfo, RunRef, local_dir, open_run, scan_hits
from runner.version import __version__

__all__ = [
    "Headline",
    "ReportContent",
    "TopHit",
    "WorstQuery",
    "gather",
    "higher_is_better",
    "primary_measure",
    "safe_url",
]

PREFERRED_MEASURES: Final = ("nDCG@10", "AP", "P@10", "RR")
_RUN_KEYS: Final = (
    "run_id",
    "suite_name",
    "status",
    "started_at",
    "ended_at",
    "dataset_id",
    "base_url",
    "tool_version",
    "shard",
    "dataset_caveat",
    "resumed_at",
    "retries",
)


@dataclass(frozen=True, slots=True)
class Headline:
    """One mode's table at one unit: a row per setting, a column per measure."""

    mode: str
    unit: str
    measures: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]  # setting, cutoff, n_queries, values: {measure: value}
    best: dict[str, str]  # measure -> the setting with the highest mean (quality measures only)


@dataclass(frozen=True, slots=True)
class TopHit:
    rank: int
    media_id: str
    file_name: str | None
    caption: str | None
    raw_score: float | None
    score_type: str | None
    grade: int | None  # None: unjudged


@dataclass(frozen=True, slots=True)
class WorstQuery:
    mode: str
    setting: str
    query_id: str
    query_text: str | None
    measure: str
    value: float
    n_relevant: int
    first_relevant: int | None  # rank of the first relevant media returned, None if none
    hits: tuple[TopHit, ...]


@dataclass(frozen=True, slots=True)
class ReportContent:
    """Everything a report shows; `comparison` and the gates only for `vlbench compare`."""

    run: dict[str, Any]
    generated_at: str
    ev: Evaluation
    primary: str
    modes: tuple[str, ...]
    headlines: tuple[Headline, ...]
    worst: tuple[WorstQuery, ...]
    comparison: Comparison | None = None
    gates: tuple[Gate, ...] = ()
    failures: tuple[GateFailure, ...] = ()
    extras: tuple[
        ExtraSection, ...
    ] = ()  # sections of other features (runner.report.sections.extra)
    quality: Quality | None = None  # intervals, fusions, cut-off advice (runner.report.sections)
    api_contract: tuple[Finding, ...] = ()  # the run's own answers checked (runner.api.contract)

    def api_verdict(self) -> tuple[str, str] | None:
        """("changed", what) when the service's answers broke what vlbench relies on, else
        ("ok", how much was checked); None for a run that recorded no checks.

        Shown apart from the quality measures: a drop with "API changed" beside it is the
        service's doing, not the search's.
        """
        if not self.api_contract:
            return None
        changed = [f for f in self.api_contract if f.status == "changed"]
        if changed:
            return "changed", "; ".join(f"{f.check}: {f.evidence}" for f in changed)
        return "ok", f"{len(self.api_contract)} checks of this run's own answers passed"

    def best_settings(self) -> dict[str, str]:
        """Each mode's best setting by the primary measure (media); its loosest when unjudged."""
        return {
            h.mode: h.best.get(self.primary, h.rows[-1]["setting"])
            for h in self.headlines
            if h.unit == "media" and h.rows
        }


def higher_is_better(measure: str) -> bool:
    """Whether a larger mean is better: every measure but NumRet and Judged@k (coverage)."""
    return parse_measure(measure).name not in ("NumRet", "Judged")


def primary_measure(measures: Sequence[str]) -> str:
    """The measure the report ranks by: nDCG@10 if evaluated, else AP, P@10, RR, else the first."""
    for name in PREFERRED_MEASURES:
        if name in measures:
            return name
    quality = [m for m in measures if higher_is_better(m)]
    return (quality or list(measures) or ["nDCG@10"])[0]


def safe_url(url: str | None) -> str | None:
    """The URL without user info, query or fragment: nothing secret reaches a report.

    The manifest's own rule (`store.public_base_url`), applied again because a
    copied or hand-made manifest may not have gone through it.
    """
    return public_base_url(url) if url else url


def _opened(run: RunRef) -> RunInfo | None:
    """The run's manifest and place, read once; None for a copied or synthetic run without one
    (evaluate_run read it, so the report shows what there is)."""
    try:
        return open_run(run)
    except RunError:
        return None


def _run_facts(info: RunInfo | None, run: RunRef, ev: Evaluation) -> dict[str, Any]:
    manifest: Mapping[str, Any] = info.manifest if info is not None else {}
    where = info.uri if info is not None else str(run)
    facts = {key: manifest.get(key) for key in _RUN_KEYS}
    facts["run_id"] = facts["run_id"] or ev.run_id or where.rstrip("/").rsplit("/", 1)[-1]
    facts["base_url"] = safe_url(facts["base_url"])
    counts = manifest.get("counts")
    facts["counts"] = {str(k): v for k, v in counts.items()} if isinstance(counts, Mapping) else {}
    facts["path"] = where
    return facts


def _api_contract(info: RunInfo | None) -> tuple[Finding, ...]:
    """The checks the run made of its own answers (none for a run without a manifest)."""
    return tuple(findings_from_dicts(info.manifest.get(CONTRACT_KEY))) if info is not None else ()


def _sorted_settings(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("cutoff", "setting", nulls_last=False)


def _headlines(ev: Evaluation, primary: str) -> list[Headline]:
    out = []
    summary = ev.summary
    for (mode, unit), part in summary.group_by("mode", "unit", maintain_order=True):
        measures = tuple(m for m in ev.measures if m in set(part["measure"].to_list()))
        wide = part.pivot(on="measure", index=["setting", "cutoff"], values="value")
        counts = part.filter(pl.col("measure") == primary).select("setting", "n_queries")
        wide = _sorted_settings(wide.join(counts, on="setting", how="left"))
        rows = tuple(
            {
                "setting": row["setting"],
                "cutoff": row["cutoff"],
                "n_queries": row.get("n_queries"),
                "values": {m: row.get(m) for m in measures},
            }
            for row in wide.iter_rows(named=True)
        )
        best = {}
        for m in measures:
            scored = [(r["values"][m], r["setting"]) for r in rows if _finite(r["values"][m])]
            if scored and higher_is_better(m):
                best[m] = max(scored, key=lambda item: (item[0], _neg(item[1])))[1]
        out.append(Headline(str(mode), str(unit), measures, rows, best))
    out.sort(key=lambda h: (h.unit != "media", h.mode))
    return out


def _neg(text: str) -> tuple[int, ...]:
    # Ties go to the setting whose name sorts first: negate characters for max().
    return tuple(-ord(c) for c in text)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _worst_queries(
    ev: Evaluation,
    settings: Mapping[str, str],
    primary: str,
    hits: pl.LazyFrame,
    qrels: pl.DataFrame,
    *,
    n_queries: int,
    n_hits: int,
) -> list[WorstQuery]:
    """Per mode, at its best setting by the primary measure: the judged queries scoring lowest."""
    texts = dict(ev.queries.select("query_id", "query_text").iter_rows())
    relevant = dict(ev.queries.select("query_id", "n_relevant").iter_rows())
    picks = []
    for mode, setting in settings.items():
        worst = (
            ev.per_query.filter(
                (pl.col("mode") == mode)
                & (pl.col("setting") == setting)
                & (pl.col("unit") == "media")
                & (pl.col("measure") == primary)
                & pl.col("value").is_not_null()
            )
            .sort("value", "query_id")
            .head(n_queries)
        )
        picks += [(mode, setting, q, v) for q, v in worst.select("query_id", "value").iter_rows()]
    if not picks:
        return []
    wanted = pl.DataFrame(
        [(m, s, q) for m, s, q, _ in picks],
        schema={"mode": pl.String, "setting": pl.String, "query_id": pl.String},
        orient="row",
    )
    graded = hits.join(wanted.lazy(), on=["mode", "setting", "query_id"], how="semi").join(
        qrels.lazy(), on=["query_id", "media_id"], how="left"
    )
    first = {
        (m, s, q): r
        for m, s, q, r in graded.filter(pl.col("grade") >= 1)
        .group_by("mode", "setting", "query_id")
        .agg(pl.col("rank").min())
        .collect()
        .iter_rows()
    }
    top = (
        graded.filter(pl.col("rank") <= n_hits)
        .select(
            "mode",
            "setting",
            "query_id",
            "rank",
            "media_id",
            "file_name",
            "caption",
            "raw_score",
            "score_type",
            "grade",
        )
        .sort("rank")
        .collect()
    )
    by_key: dict[tuple[str, str, str], list[TopHit]] = {}
    for row in top.iter_rows(named=True):
        key = (row["mode"], row["setting"], row["query_id"])
        by_key.setdefault(key, []).append(
            TopHit(
                rank=row["rank"],
                media_id=row["media_id"],
                file_name=row["file_name"],
                caption=row["caption"],
                raw_score=row["raw_score"],
                score_type=row["score_type"],
                grade=row["grade"],
            )
        )
    return [
        WorstQuery(
            mode=mode,
            setting=setting,
            query_id=query_id,
            query_text=texts.get(query_id),
            measure=primary,
            value=value,
            n_relevant=int(relevant.get(query_id) or 0),
            first_relevant=first.get((mode, setting, query_id)),
            hits=tuple(by_key.get((mode, setting, query_id), ())),
        )
        for mode, setting, query_id, value in picks
    ]


def gather(
    run: RunRef,
    ev: Evaluation,
    *,
    comparison: Comparison | None = None,
    gates: Sequence[Gate] = (),
    failures: Sequence[GateFailure] = (),
    worst_queries: int = 5,
    top_hits: int = 5,
    now: dt.datetime | None = None,
    quality: QualityOptions | None = None,
) -> ReportContent:
    """Collect what the report of `run` shows (see the module docstring)."""
    extra = list(quality.extra_judgments) if quality is not None else None
    primary = primary_measure(ev.measures)
    headlines = _headlines(ev, primary)
    hits = scan_hits(run)
    best = ReportContent(
        run={},
        generated_at="",
        ev=ev,
        primary=primary,
        modes=(),
        headlines=tuple(headlines),
        worst=(),
    ).best_settings()
    worst = _worst_queries(
        ev, best, primary, hits, ev.qrels, n_queries=worst_queries, n_hits=top_hits
    )
    modes = tuple(sorted(set(ev.summary["mode"].to_list()) | set(ev.sweep["mode"].to_list())))
    stamp = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    info = _opened(run)
    facts = _run_facts(info, run, ev)
    facts["tool_version"] = facts["tool_version"] or __version__
    return ReportContent(
        run=facts,
        generated_at=stamp,
        ev=ev,
        primary=primary,
        modes=modes,
        headlines=tuple(headlines),
        worst=tuple(worst),
        comparison=comparison,
        gates=tuple(gates),
        failures=tuple(failures),
        extras=extra_sections(local_dir(info) if info else Path(str(run)), ev, extra),
        quality=gather_quality(run, ev, primary, best, quality),
        api_contract=_api_contract(info),
    )
