"""write_report: the run's `summary.json`, `report.md` and self-contained `report.html`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from runner.evaluate.compare import (
    Comparison,
    Gate,
    GateFailure,
    check_gates,
    compare_run_dirs,
    parse_gate,
    same_run,
)
from runner.evaluate.compare.noise import (
    HeldBack,
    check_gates_with_noise,
    noise_floor_of_runs,
)
from runner.evaluate.evaluation import Evaluation
from runner.evaluate.run import evaluate_run, write_evaluation
from runner.report import plots
from runner.report.content import ReportContent, gather
from runner.report.html import Plots, render_html
from runner.report.markdown import render_markdown
from runner.report.sections.quality import QualityOptions
from runner.report.summary import build_summary, dumps
from runner.store.atomic import atomic_write, write_error
from runner.store.reader import RunRef, local_dir, open_run

__all__ = [
    "ComparisonReport",
    "ReportPaths",
    "compare_and_report",
    "comparison_dir",
    "render_plots",
    "report_run",
    "write_report",
]

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
SUMMARY_FILE = "summary.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
    with atomic_write(path) as out:  # a reader never sees half a report
        out.write(text.encode("utf-8"))


def _make_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(out, exc) from exc


def write_report(
    run: RunRef,
    ev: Evaluation,
    *,
    comparison: Comparison | None = None,
    out_dir: Path | str | None = None,
    gates: Sequence[Gate] = (),
    failures: Sequence[GateFailure] = (),
    now: dt.datetime | None = None,
    quality: QualityOptions | None = None,
) -> ReportPaths:
    """Write `summary.json`, `report.md` and `report.html` for the run `ev` evaluated.

    `out_dir` defaults to the run directory (for a run on object storage: its local folder,
    `store.reader.local_dir`). With `comparison` (run B = this run against run A) the report
    opens with the deltas and their significance, and `gates` / `failures` say which gates
    passed. The worst queries' hits are marked relevant from `ev.qrels`, the judgments the
    evaluation used. Each file is written atomically; a full disk is a `WriteError` naming the
    file, and leaves the earlier report (if any) as it was.

    >>> paths = write_report(run_dir, evaluate_run(run_dir))
    >>> paths.html  # open in a browser; it fetches nothing
    """
    info = open_run(run)
    out = Path(out_dir) if out_dir is not None else local_dir(info)
    _make_dir(out)
    content = gather(
        info, ev, comparison=comparison, gates=gates, failures=failures, now=now, quality=quality
    )
    paths = ReportPaths(
        html=out / HTML_FILE, markdown=out / MARKDOWN_FILE, summary=out / SUMMARY_FILE
    )
    _write_text(paths.summary, dumps(build_summary(content)))
    _write_text(paths.markdown, render_markdown(content))
    _write_text(paths.html, render_html(content, render_plots(content)))
    return paths


def report_run(
    run: RunRef,
    *,
    extra_judgments: Sequence[Path | str] | None = None,
    out_dir: Path | str | None = None,
    quality: QualityOptions | None = None,
) -> ReportPaths:
    """Evaluate a run, store its metrics and distributions, and write its report.

    The one call behind `vlbench report` and the report a finished `vlbench run` prints:
    `metrics.parquet` and `distributions.parquet` go beside the report (the run directory
    unless `out_dir` is given; a run on object storage is read in place and reported into its
    local folder, `reports/suite=…/run_date=…/run_id=…/`).
    """
    info = open_run(run)
    ev = evaluate_run(info, extra_judgments=extra_judgments)
    out = Path(out_dir) if out_dir is not None else local_dir(info)
    _make_dir(out)
    write_evaluation(ev, out)
    if extra_judgments:
        quality = dataclasses.replace(
            quality or QualityOptions(), extra_judgments=tuple(Path(p) for p in extra_judgments)
        )
    return write_report(info, ev, out_dir=out, quality=quality)


def comparison_dir(run_b: RunRef, cmp: Comparison) -> Path:
    """Where a comparison's report goes by default: compare-<run A>[-<crossed pairs>] in run B.

    Each pairing gets its own folder, so comparing other settings never overwrites a report.
    """
    name = f"compare-{cmp.run_a}"
    if cmp.crossed:
        name += "-" + "+".join(
            f"{p.mode}_{p.setting_a}_to_{p.setting_b}" for p in cmp.pairs if p.crossed
        )
    return local_dir(open_run(run_b)) / _UNSAFE.sub("_", name)[:120]


@dataclass(frozen=True, slots=True)
class ComparisonReport:
    """What `vlbench compare` did: both evaluations, the comparison, the gates that tripped
    (and those the noise floor held back), where its report went, and whether A and B were
    one run."""

    ev_a: Evaluation
    ev_b: Evaluation
    comparison: Comparison
    gates: tuple[Gate, ...]
    failures: tuple[GateFailure, ...]
    paths: ReportPaths
    same_run: bool
    held: tuple[HeldBack, ...] = ()


def compare_and_report(
    run_a: RunRef,
    run_b: RunRef,
    *,
    gates: Sequence[str] = (),
    out_dir: Path | str | None = None,
    noise_runs: Sequence[RunRef] = (),
    quality: QualityOptions | None = None,
    **options: Any,
) -> ComparisonReport:
    """Compare run B with run A, check `gates` (parsed before any work), write B's report with
    the comparison (default folder: `comparison_dir`). `options` go to `compare_run_dirs`.

    With two or more A/A `noise_runs`, a gate trips only when its delta is significant and
    above their noise floor (`runner.evaluate.compare.noise`); the rows held back by either
    rule are in `held` and in the report.
    """
    parsed = tuple(parse_gate(text) for text in gates)
    extra = options.get("extra_judgments")
    noise = [open_run(run) for run in noise_runs]
    floor = noise_floor_of_runs(noise, extra_judgments=extra) if noise else None
    info_a, info_b = open_run(run_a), open_run(run_b)
    ev_a, ev_b, cmp = compare_run_dirs(info_a, info_b, **options)
    if floor is not None:
        failed, held = check_gates_with_noise(cmp, parsed, floor)
    else:
        failed, held = check_gates(cmp, list(parsed)), []
    failures = tuple(failed)
    quality = dataclasses.replace(
        quality or QualityOptions(),
        baseline=info_a,
        noise=floor,
        noise_runs=tuple(info.run_id for info in noise),
        held=tuple(held),
        extra_judgments=tuple(Path(p) for p in extra or ()),
    )
    out = out_dir if out_dir is not None else comparison_dir(info_b, cmp)
    paths = write_report(
        info_b,
        ev_b,
        comparison=cmp,
        out_dir=out,
        gates=parsed,
        failures=failures,
        quality=quality,
    )
    return ComparisonReport(
        ev_a, ev_b, cmp, parsed, failures, paths, same_run(info_a, info_b), tuple(held)
    )
