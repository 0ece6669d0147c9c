"""write_report: the run's `summary.json`, `report.md` and self-contained `report.html`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from runner.errors import RunError
from runner.evaluate.compare import Comparison, Gate, GateFailure
from runner.evaluate.evaluation import Evaluation
from runner.evaluate.run import evaluate_run, write_evaluation
from runner.report import plots
from runner.report.content import ReportContent, gather
from runner.report.html import Plots, render_html
from runner.report.markdown import render_markdown
from runner.report.sections.quality import QualityOptions
from runner.report.summary import build_summary, dumps

__all__ = ["ReportPaths", "render_plots", "report_run", "write_report"]

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True, slots=True)
class ReportPaths:
    """Where `write_report` put its three files."""

    html: Path
    markdown: Path
    summary: Path


def render_plots(content: ReportContent) -> Plots:
    """Every plot of the report, as inline SVG."""
    ev = content.ev
    colours = plots.mode_colours(content.modes)
    media_sweep = ev.sweep.filter(pl.col("unit") == "media")
    cutoffs: dict[str, list[float]] = {}
    for mode, cutoff in media_sweep.select("mode", "cutoff").drop_nulls().iter_rows():
        cutoffs.setdefault(mode, []).append(cutoff)
    operating = {
        mode: cutoff
        for mode, cutoff in ev.operating_points.filter(pl.col("unit") == "media")
        .select("mode", "cutoff")
        .drop_nulls()
        .iter_rows()
    }
    cmp = content.comparison
    return Plots(
        pr_curves=plots.pr_curves(ev.sweep, ev.operating_points, colours),
        hits=plots.hits_per_setting(ev.sweep, colours),
        scores=plots.score_histograms(
            ev.distributions, colours, cutoffs=cutoffs, operating=operating
        ),
        overlap=plots.overlap_heatmaps(ev.overlap),
        deltas=(
            None
            if cmp is None
            else plots.comparison_deltas(cmp.measures, content.primary, colours, alpha=cmp.alpha)
        ),
    )


def _write_text(path: Path, text: str) -> None:
    # Write beside and rename: a reader never sees half a report.
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def write_report(
    run_dir: Path | str,
    ev: Evaluation,
    *,
    comparison: Comparison | None = None,
    out_dir: Path | str | None = None,
    gates: Sequence[Gate] = (),
    failures: Sequence[GateFailure] = (),
    extra_judgments: Sequence[Path | str] | None = None,
    now: dt.datetime | None = None,
    quality: QualityOptions | None = None,
) -> ReportPaths:
    """Write `summary.json`, `report.md` and `report.html` for the run `ev` evaluated.

    `out_dir` defaults to the run directory. With `comparison` (run B = this run against run
    A) the report opens with the deltas and their significance, and `gates` / `failures` say
    which gates passed. `extra_judgments` are the qrels files the evaluation used, so the worst
    queries' hits are marked relevant or not the same way.

    >>> paths = write_report(run_dir, evaluate_run(run_dir))
    >>> paths.html  # open in a browser; it fetches nothing
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{out}: cannot create the report directory: {exc}") from exc
    content = gather(
        run_dir,
        ev,
        comparison=comparison,
        gates=gates,
        failures=failures,
        extra_judgments=extra_judgments,
        now=now,
        quality=quality,
    )
    paths = ReportPaths(
        html=out / HTML_FILE, markdown=out / MARKDOWN_FILE, summary=out / SUMMARY_FILE
    )
    try:
        _write_text(paths.summary, dumps(build_summary(content)))
        _write_text(paths.markdown, render_markdown(content))
        _write_text(paths.html, render_html(content, render_plots(content)))
    except OSError as exc:
        raise RunError(f"{out}: cannot write the report: {exc}") from exc
    return paths


def report_run(
    run_dir: Path | str,
    *,
    extra_judgments: Sequence[Path | str] | None = None,
    out_dir: Path | str | None = None,
    quality: QualityOptions | None = None,
) -> ReportPaths:
    """Evaluate a run, store its metrics and distributions, and write its report.

    The one call behind `vlbench report` and the report a finished `vlbench run` prints:
    `metrics.parquet` and `distributions.parquet` go beside the report (the run directory
    unless `out_dir` is given).
    """
    run_dir = Path(run_dir)
    extra = [Path(p) for p in extra_judgments] if extra_judgments else None
    ev = evaluate_run(run_dir, extra_judgments=extra)
    out = Path(out_dir) if out_dir is not None else run_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{out}: cannot create the report directory: {exc}") from exc
    write_evaluation(ev, out)
    if quality is not None and extra:
        quality = dataclasses.replace(quality, extra_judgments=tuple(extra))
    elif extra:
        quality = QualityOptions(extra_judgments=tuple(extra))
    return write_report(run_dir, ev, out_dir=out, extra_judgments=extra, quality=quality)
