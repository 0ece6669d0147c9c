"""`vlbench report`, `vlbench compare` and `vlbench judge-todo`: measuring runs that are on disk.

None of them touches the network: they read run directories and write files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from runner.cli._app import app, fail
from runner.errors import VlbenchError

# Evaluation and reports pull in scipy and matplotlib: imported inside the commands, so that
# `vlbench --help` and the other commands start fast.
if TYPE_CHECKING:
    from runner.evaluate.compare import Comparison, GateFailure
    from runner.report.tables import Table

__all__ = ["compare", "judge_todo", "report"]

RunArg = Annotated[Path, typer.Argument(help="A run directory.", show_default=False)]
QrelsOpt = Annotated[
    list[Path] | None,
    typer.Option("--qrels", help="Extra TREC qrels file (repeatable), added to the run's own."),
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Directory to write the report into.")]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@app.command()
def report(run: RunArg, qrels: QrelsOpt = None, out: OutOpt = None) -> None:
    """Evaluate a run and write its report; print the path of report.html.

    Writes metrics.parquet and distributions.parquet into the run directory (or --out) and
    summary.json, report.md and a self-contained report.html (it fetches nothing).
    Example: vlbench report reports/suite=demo/run_date=2024-11-24/run_id=0200 --qrels more.qrels
    """
    from runner.report import report_run

    try:
        paths = report_run(run, extra_judgments=qrels, out_dir=out)
    except VlbenchError as exc:
        fail(exc)
    except OSError as exc:
        fail(VlbenchError(f"cannot write the report: {exc}"))
    typer.echo(str(paths.html))


def render_text_table(table: Table) -> str:
    """A table as aligned plain text for the terminal."""
    widths = [len(h) for h in table.headers]
    for row in table.rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(w) if i in table.numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(table.headers), rule, *(line(row) for row in table.rows)])


def _verdict(
    cmp: Comparison, failures: list[GateFailure], gates: list[str], order: tuple[str, ...]
) -> str:
    from runner.report.tables import verdict_table

    media = cmp.measures.filter(cmp.measures["unit"] == "media")
    significant = int(media["significant"].sum())
    lines = [
        f"run B {cmp.run_b} against run A {cmp.run_a} (media level; * Holm-adjusted "
        f"p < {cmp.alpha:g}, paired randomisation test)",
        "",
        render_text_table(verdict_table(cmp, "media", order)),
        "",
        f"{significant} of {media.height} differences significant.",
    ]
    failed = {str(f.gate) for f in failures}
    for gate in gates:
        lines.append(f"gate {gate}: {'FAIL' if gate in failed else 'pass'}")
    lines += [f"  FAIL {f}" for f in failures]
    return "\n".join(lines)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="The baseline run directory.", show_default=False)],
    run_b: Annotated[Path, typer.Argument(help="The candidate run directory.", show_default=False)],
    fail_on: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-on",
            help="Gate on a delta B - A, e.g. 'nDCG@10<-0.02' or 'semantic:P@10@sem=0.5<=-0.05'"
            " (repeatable); exit code 1 when any trips.",
        ),
    ] = None,
    qrels: QrelsOpt = None,
    out: OutOpt = None,
    measure: Annotated[
        list[str] | None, typer.Option("--measure", help="Compare only these (repeatable).")
    ] = None,
    permutations: Annotated[
        int, typer.Option(help="Sign flips of the randomisation test.", min=1)
    ] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the randomisation test.")] = 0,
    alpha: Annotated[float, typer.Option(help="Significance level after Holm.")] = 0.05,
) -> None:
    """Compare run B with run A: deltas, paired significance, regressions, drift; gate on them.

    Prints the verdict table and the path of the comparison report (default: inside run B,
    compare-<run A id>/). Exit code 1 when a --fail-on gate trips, 2 for a run that cannot be
    read or a gate that cannot be parsed or matches nothing.
    Example: vlbench compare RUN_LAST_NIGHT RUN_TONIGHT --fail-on "nDCG@10<-0.02"
    """
    from runner.evaluate.compare import check_gates, compare_run_dirs, parse_gate
    from runner.report import write_report

    try:
        gates = [parse_gate(text) for text in fail_on or ()]  # bad gates fail before any work
        _, ev_b, cmp = compare_run_dirs(
            run_a,
            run_b,
            measures=measure,
            extra_judgments=qrels,
            n_permutations=permutations,
            seed=seed,
            alpha=alpha,
        )
        failures = check_gates(cmp, gates)
        out_dir = out if out is not None else run_b / f"compare-{_UNSAFE.sub('_', cmp.run_a)}"
        paths = write_report(
            run_b,
            ev_b,
            comparison=cmp,
            out_dir=out_dir,
            gates=gates,
            failures=failures,
            extra_judgments=qrels,
        )
    except VlbenchError as exc:
        fail(exc)
    typer.echo(_verdict(cmp, failures, [str(g) for g in gates], ev_b.measures))
    typer.echo(f"report: {paths.html}")
    if failures:
        raise typer.Exit(code=1)


@app.command("judge-todo")
def judge_todo(
    run: RunArg,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="File to write (default: judge-todo.qrels in the run)."),
    ] = None,
    k: Annotated[
        int, typer.Option("--k", help="Depth: top k of every mode and setting.", min=1)
    ] = 10,
    qrels: QrelsOpt = None,
) -> None:
    """Write the run's unjudged top-k media as a TREC qrels file to label; print its path.

    Replace each -1 by a grade and pass the file back with --qrels (or list it in the suite).
    Example: vlbench judge-todo reports/suite=demo/run_date=2024-11-24/run_id=20241124T0200 --k 5
    """
    from runner.evaluate.unjudged import write_judge_todo

    path = out if out is not None else run / "judge-todo.qrels"
    try:
        n = write_judge_todo(run, path, k=k, extra_judgments=qrels)
    except VlbenchError as exc:
        fail(exc)
    except OSError as exc:
        fail(VlbenchError(f"{path}: cannot write: {exc}"))
    typer.echo(f"{n} unjudged media to label (top {k}), in:", err=True)
    typer.echo(str(path))
