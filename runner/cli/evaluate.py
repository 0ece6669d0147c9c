"""`vlbench report`, `vlbench compare` and `vlbench judge-todo`: measuring runs that are on disk.

None of them touches the network: they read run directories and write files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from runner.cli._app import app, fail
from runner.errors import VlbenchError

# Evaluation and reports pull in scipy and matplotlib: imported inside the commands, so that
# `vlbench --help` and the other commands start fast.
if TYPE_CHECKING:
    from runner.evaluate.compare import Comparison, GateFailure, Pairing
    from runner.evaluate.evaluation import Evaluation
    from runner.report.sections.quality import QualityOptions
    from runner.report.tables import Table

__all__ = ["compare", "judge_todo", "report"]

RunArg = Annotated[Path, typer.Argument(help="A run directory.", show_default=False)]
QrelsOpt = Annotated[
    list[Path] | None,
    typer.Option("--qrels", help="Extra TREC qrels file (repeatable), added to the run's own."),
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Directory to write the report into.")]
FuseOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--fuse",
        help="Fuse modes from the stored hits, e.g. 'rrf(fts,semantic)', 'rrf(fts,semantic,k=10)',"
        " 'combsum(caption,fts)', 'combmnz(...)' (repeatable; default: the suite's, else all).",
    ),
]
TargetPOpt = Annotated[
    float, typer.Option("--target-p", help="Cut-off advice: precision to reach, most recall.")
]
TargetROpt = Annotated[
    float, typer.Option("--target-r", help="Cut-off advice: recall to reach, most precision.")
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@app.command()
def report(
    run: RunArg,
    qrels: QrelsOpt = None,
    out: OutOpt = None,
    fuse: FuseOpt = None,
    target_p: TargetPOpt = 0.8,
    target_r: TargetROpt = 0.9,
) -> None:
    """Evaluate a run and write its report; print the path of report.html.

    Writes metrics.parquet and distributions.parquet into the run directory (or --out) and
    summary.json, report.md and a self-contained report.html (it fetches nothing), with
    bootstrap intervals, the best fusion of modes against each mode, and cut-off advice.
    Example: vlbench report reports/suite=demo/run_date=2024-11-24/run_id=0200 --qrels more.qrels
    Example: vlbench report RUN --fuse 'rrf(fts,semantic)' --target-p 0.7
    """
    from runner.report import report_run

    try:
        options = _quality_options(fuse, target_p, target_r)
        paths = report_run(run, extra_judgments=qrels, out_dir=out, quality=options)
    except VlbenchError as exc:
        fail(exc)
    except OSError as exc:
        fail(VlbenchError(f"cannot write the report: {exc}"))
    typer.echo(str(paths.html))


def _quality_options(
    fuse: list[str] | None, target_p: float, target_r: float, **more: Any
) -> QualityOptions:
    """The report's quality options from the command line (bad values: `UsageError`)."""
    from runner.evaluate.fusion import parse_fusion
    from runner.report.sections.quality import QualityOptions, check_targets

    check_targets(target_p, target_r)
    fusions = tuple(parse_fusion(text) for text in fuse) if fuse else None
    return QualityOptions(fusions=fusions, target_p=target_p, target_r=target_r, **more)


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


def _pairs_lines(cmp: Comparison, same_run: bool) -> list[str]:
    """Which settings were compared, when that is not simply each with itself."""
    from runner.evaluate.compare import describe_pairs

    if not cmp.crossed:
        return []
    where = "two settings of one run" if same_run else "settings paired"
    return [f"{where} (A → B): {describe_pairs(cmp.pairs)}"]


def _verdict(
    cmp: Comparison,
    failures: list[GateFailure],
    gates: list[str],
    order: tuple[str, ...],
    *,
    same_run: bool = False,
) -> str:
    from runner.report.tables import verdict_table

    media = cmp.measures.filter(cmp.measures["unit"] == "media")
    significant = int(media["significant"].sum())
    lines = [
        f"run B {cmp.run_b} against run A {cmp.run_a} (media level; * Holm-adjusted "
        f"p < {cmp.alpha:g}, paired randomisation test)",
        *_pairs_lines(cmp, same_run),
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


def _pairing(
    settings_a: list[str] | None,
    settings_b: list[str] | None,
    modes: list[str] | None,
    across: bool,
) -> Pairing | None:
    """The pairing the options ask for; None for the default (equal settings)."""
    from runner.errors import UsageError
    from runner.evaluate.compare import Pairing

    a, b = list(settings_a or ()), list(settings_b or ())
    if len(a) != len(b):
        raise UsageError(
            f"--setting-a and --setting-b go in pairs: got {len(a)} --setting-a and "
            f"{len(b)} --setting-b"
        )
    if modes and not (a or across):
        raise UsageError("--mode says where --setting-a/--setting-b or --across-settings apply")
    if not a and not across:
        return None
    return Pairing(
        settings=tuple(zip(a, b, strict=True)), modes=tuple(modes) if modes else None, across=across
    )


def _unpaired_notes(ev_a: Evaluation, ev_b: Evaluation, cmp: Comparison) -> list[str]:
    """A note for each mode both runs hold that nothing compared (settings that differ)."""
    from runner.evaluate.compare import unpaired_modes

    notes = []
    for mode, (settings_a, settings_b) in unpaired_modes(ev_a, ev_b, cmp.pairs).items():
        notes.append(
            f"note: mode {mode} was not compared: no setting in common (run A: "
            f"{', '.join(settings_a)}; run B: {', '.join(settings_b)}); pair them with "
            "--setting-a/--setting-b or --across-settings"
        )
    return notes


def _out_dir(run_b: Path, cmp: Comparison) -> Path:
    """compare-<run A> inside run B, plus the crossed pairs: each pairing its own report."""
    name = f"compare-{cmp.run_a}"
    if cmp.crossed:
        name += "-" + "+".join(
            f"{p.mode}_{p.setting_a}_to_{p.setting_b}" for p in cmp.pairs if p.crossed
        )
    return run_b / _UNSAFE.sub("_", name)[:120]


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="The baseline run directory.", show_default=False)],
    run_b: Annotated[Path, typer.Argument(help="The candidate run directory.", show_default=False)],
    fail_on: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-on",
            help="Gate on a delta B - A, e.g. 'nDCG@10<-0.02' or 'semantic:P@10@st=0.5<=-0.05'"
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
    setting_a: Annotated[
        list[str] | None,
        typer.Option(
            "--setting-a",
            help="A setting of run A (e.g. 'tst=0.4') to compare with the --setting-b at the"
            " same position (repeatable, in pairs).",
        ),
    ] = None,
    setting_b: Annotated[
        list[str] | None,
        typer.Option(
            "--setting-b", help="The setting of run B (e.g. 'tst=0.6') it is paired with."
        ),
    ] = None,
    across_settings: Annotated[
        bool,
        typer.Option(
            "--across-settings",
            help="Compare each mode's only setting in A with its only setting in B, whatever"
            " their names (two suites that differ in a cut-off).",
        ),
    ] = False,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            "--mode",
            help="Apply --setting-a/-b or --across-settings in this mode only (repeatable).",
        ),
    ] = None,
    shared_pool: Annotated[
        bool,
        typer.Option(
            "--shared-pool/--own-pools",
            help="Judge both runs against the union of their resolved qrels (label judgments"
            " are pooled from each run's own hits), or each against its own.",
        ),
    ] = True,
    noise: Annotated[
        list[Path] | None,
        typer.Option(
            "--noise",
            help="An A/A run of the same suite (repeat, two or more): gates then trip only when"
            " a delta is significant after Holm AND above the noise floor these runs show.",
        ),
    ] = None,
    target_p: TargetPOpt = 0.8,
    target_r: TargetROpt = 0.9,
) -> None:
    """Compare run B with run A: deltas, paired significance, regressions, drift; gate on them.

    Each (mode, setting) of A is compared with the same one of B. To compare settings that
    differ, pair them: --setting-a tst=0.4 --setting-b tst=0.6 (RUN_A and RUN_B may then be
    the same run), or --across-settings; the other modes keep equal settings. Prints the
    verdict table and the path of the comparison report (default: inside run B,
    compare-<run A id>[-<pairs>]/). Exit code 1 when a --fail-on gate trips, 2 for a run that
    cannot be read, a gate that cannot be parsed or matches nothing, or a setting or mode a
    run does not have (the message lists those it has).
    Example: vlbench compare RUN_LAST_NIGHT RUN_TONIGHT --fail-on "nDCG@10<-0.02"
    Example: vlbench compare RUN RUN --setting-a tst=0.4 --setting-b tst=0.6 --mode caption
    Example: vlbench compare RUN_DEMO_STRICT RUN_DEMO_LOOSE --across-settings
    Example: vlbench compare A B --noise AA1 --noise AA2 --fail-on "nDCG@10<-0.02"
    """
    from runner.evaluate.compare import check_gates, compare_run_dirs, parse_gate
    from runner.evaluate.compare.noise import (
        HeldBack,
        check_gates_with_noise,
        noise_floor_of_runs,
    )
    from runner.report import write_report

    held: list[HeldBack] = []

    try:
        gates = [parse_gate(text) for text in fail_on or ()]  # bad gates fail before any work
        pairing = _pairing(setting_a, setting_b, mode, across_settings)
        floor = noise_floor_of_runs(noise, extra_judgments=qrels) if noise else None
        ev_a, ev_b, cmp = compare_run_dirs(
            run_a,
            run_b,
            measures=measure,
            extra_judgments=qrels,
            n_permutations=permutations,
            seed=seed,
            alpha=alpha,
            pairing=pairing,
            shared_pool=shared_pool,
        )
        if floor is not None:
            failures, held = check_gates_with_noise(cmp, gates, floor)
        else:
            failures = check_gates(cmp, gates)
        options = _quality_options(
            None,
            target_p,
            target_r,
            baseline=run_a,
            noise=floor,
            noise_runs=tuple(d.name.removeprefix("run_id=") for d in noise or ()),
            held=tuple(held),
            extra_judgments=tuple(qrels or ()),
        )
        out_dir = out if out is not None else _out_dir(run_b, cmp)
        paths = write_report(
            run_b,
            ev_b,
            comparison=cmp,
            out_dir=out_dir,
            gates=gates,
            failures=failures,
            extra_judgments=qrels,
            quality=options,
        )
    except VlbenchError as exc:
        fail(exc)
    for note in _unpaired_notes(ev_a, ev_b, cmp):
        typer.echo(note, err=True)
    same_run = run_a.resolve() == run_b.resolve()
    typer.echo(_verdict(cmp, failures, [str(g) for g in gates], ev_b.measures, same_run=same_run))
    for item in held:
        typer.echo(f"  held back {item}")
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
