"""What the quality sections of a report show, gathered once: intervals, fusions, cut-offs, noise.

`gather_quality` is called by `runner.report.content.gather`; the renderers in
`runner.report.sections.render` only format what it found. `QualityOptions` carries what the
commands ask for (`--fuse`, `--target-p`, `--target-r`, `--noise`); every default gives a full
report: intervals of every headline measure, every fusion of the run's modes (or the suite's
own `fusions`), and the cut-off advice at P >= 0.8 and R >= 0.9.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from runner.errors import RunError, UsageError
from runner.evaluate.bootstrap import DEFAULT_RESAMPLES, summary_intervals
from runner.evaluate.compare.noise import HeldBack
from runner.evaluate.cutoff import advise_cutoffs, score_shift, setting_pr
from runner.evaluate.evaluation import Evaluation
from runner.evaluate.fusion import (
    Fused,
    Fusion,
    best_fusion,
    default_fusions,
    evaluate_fusions,
    fusion_verdicts,
    parse_fusion,
)
from runner.store.reader import RunRef, open_run

__all__ = [
    "Quality",
    "QualityOptions",
    "check_targets",
    "fusions_of",
    "gather_quality",
    "quality_options",
]


@dataclass(frozen=True, slots=True)
class QualityOptions:
    """What to compute beyond the defaults (see the module docstring)."""

    fusions: tuple[Fusion, ...] | None = None  # None: the suite's, else every default fusion
    target_p: float = 0.8
    target_r: float = 0.9
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    baseline: RunRef | None = None  # run A of a comparison: score shift against it
    noise: pl.DataFrame | None = None  # NOISE_SCHEMA, from `vlbench compare --noise`
    noise_runs: tuple[str, ...] = ()
    held: tuple[HeldBack, ...] = ()
    extra_judgments: tuple[Path, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Quality:
    """The quality sections' content; frames of the schemas their modules name."""

    intervals: pl.DataFrame  # INTERVALS_SCHEMA, every mode and setting
    best_intervals: pl.DataFrame  # the same at each mode's best setting
    fused: Fused
    fusion_systems: pl.DataFrame  # primary measure of every fusion and mode, with intervals
    verdicts: pl.DataFrame  # fusion_verdicts on the primary measure
    best_fusion: str | None
    advice: pl.DataFrame  # ADVICE_SCHEMA, precision target then recall target
    curves: pl.DataFrame  # CURVE_SCHEMA
    shift: pl.DataFrame | None  # SHIFT_SCHEMA, with a baseline
    options: QualityOptions


def fusions_of(
    manifest: Mapping[str, Any],
    modes: Sequence[str],
    queries: Mapping[str, set[str]] | None = None,
) -> tuple[Fusion, ...]:
    """The suite's fusions as the manifest recorded them, else every default fusion of `modes`
    (of those answering a query in common, given each mode's query ids `queries`)."""
    listed = manifest.get("fusions")
    if not listed:
        return default_fusions(modes, queries)
    out = []
    for item in listed:
        if isinstance(item, str):
            out.append(parse_fusion(item))
        elif isinstance(item, Mapping):
            out.append(Fusion(str(item["method"]), tuple(item["modes"]), int(item.get("k", 60))))
    return tuple(out)


def _at_best(frame: pl.DataFrame, best: Mapping[str, str]) -> pl.DataFrame:
    picks = pl.DataFrame(
        {"mode": list(best), "setting": list(best.values())},
        schema={"mode": pl.String, "setting": pl.String},
    )
    return frame.join(picks, on=["mode", "setting"], how="semi")


def gather_quality(
    run_dir: RunRef,
    ev: Evaluation,
    primary: str,
    best: Mapping[str, str],
    options: QualityOptions | None = None,
) -> Quality:
    """Compute every quality section of the report of `run_dir` (see the module docstring)."""
    opts = options or QualityOptions()
    extra = list(opts.extra_judgments) or None
    kw = {"n_resamples": opts.n_resamples, "seed": opts.seed}
    intervals = summary_intervals(ev.per_query.filter(pl.col("unit") == "media"), **kw)
    best_intervals = _at_best(intervals, best).filter(
        pl.col("measure").is_in([m for m in ev.measures if not m.startswith(("NumRet", "Judged"))])
    )
    try:
        manifest: Mapping[str, Any] = open_run(run_dir).manifest
    except RunError:
        manifest = {}
    asked = ev.per_query.select("mode", "query_id").unique()
    queries = {
        str(mode): set(part["query_id"].to_list()) for (mode,), part in asked.group_by("mode")
    }
    fusions = (
        opts.fusions if opts.fusions is not None else fusions_of(manifest, list(best), queries)
    )
    fused = evaluate_fusions(run_dir, fusions, best, measures=ev.measures, extra_judgments=extra)
    fused_intervals = summary_intervals(fused.per_query, **kw)
    systems = pl.concat(
        [
            _at_best(intervals, best),
            fused_intervals.with_columns(pl.lit("").alias("setting")),
        ]
    ).filter(pl.col("measure") == primary)
    verdicts = fusion_verdicts(ev.per_query, fused, best, primary, seed=opts.seed)
    pr = setting_pr(run_dir, extra_judgments=extra)
    advice_p, curves = advise_cutoffs(pr, target="precision", level=opts.target_p, **kw)
    advice_r, _ = advise_cutoffs(pr, target="recall", level=opts.target_r, **kw)
    shift = (
        score_shift(opts.baseline, run_dir, extra_judgments=extra)
        if opts.baseline is not None
        else None
    )
    return Quality(
        intervals=intervals,
        best_intervals=best_intervals,
        fused=fused,
        fusion_systems=systems,
        verdicts=verdicts,
        best_fusion=best_fusion(fused, primary),
        advice=pl.concat([advice_p, advice_r]),
        curves=curves,
        shift=shift,
        options=opts,
    )


def check_targets(target_p: float, target_r: float) -> None:
    """Refuse targets outside (0, 1] before any work (`UsageError` naming the option)."""
    for name, value in (("--target-p", target_p), ("--target-r", target_r)):
        if not 0.0 < value <= 1.0:
            raise UsageError(f"{name} {value:g}: must be within (0, 1]")


def quality_options(fuse: Sequence[str] | None, target_p: float, target_r: float) -> QualityOptions:
    """The options of `vlbench report`/`compare`: fusions spelt `rrf(fts,semantic,k=10)` and
    the cut-off advice's targets, checked before any work (`UsageError`)."""
    from runner.evaluate.fusion import parse_fusion

    check_targets(target_p, target_r)
    fusions = tuple(parse_fusion(text) for text in fuse) if fuse else None
    return QualityOptions(fusions=fusions, target_p=target_p, target_r=target_r)
