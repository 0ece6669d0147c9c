"""`vlbench report`, `vlbench compare` and `vlbench judge-todo`: measuring runs already stored.

None of them touches the API: they read runs (a directory, or an `s3://`/`gs://` URI, through
the one reader) and write files on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli._app import command

__all__ = ["compare", "judge_todo", "report"]

# Evaluation and reports pull in scipy and matplotlib: imported inside the commands, so that
# `vlbench --help` and the other commands start fast.

RunArg = Annotated[
    str, typer.Argument(help="A run directory, or an s3:// / gs:// URI.", show_default=False)
]
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


@command()
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
    bootstrap intervals, the best fusion of modes against each mode, and cut-off advice. A run on
    object storage is read in place and reported into reports/suite=…/run_date=…/run_id=…/.
    Exit code 1 when a file cannot be written (a full disk: the message names the file).
    Example: vlbench report reports/suite=demo/run_date=2024-11-24/run_id=0200 --qrels more.qrels
    Example: vlbench report RUN --fuse 'rrf(fts,semantic)' --target-p 0.7
    """
    from runner.report import report_run
    from runner.report.sections.quality import quality_options

    options = quality_options(fuse, target_p, target_r)
    typer.echo(str(report_run(run, extra_judgments=qrels, out_dir=out, quality=options).html))


@command()
def compare(
    run_a: Annotated[
        str, typer.Argument(help="The baseline run (path or URI).", show_default=False)
    ],
    run_b: Annotated[
        str, typer.Argument(help="The candidate run (path or URI).", show_default=False)
    ],
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
    from runner.evaluate.compare import pairing_from_options
    from runner.report import compare_and_report
    from runner.report.sections.quality import quality_options
    from runner.report.text import comparison_text, unpaired_notes

    done = compare_and_report(
        run_a,
        run_b,
        gates=fail_on or (),
        out_dir=out,
        measures=measure,
        extra_judgments=qrels,
        n_permutations=permutations,
        seed=seed,
        alpha=alpha,
        pairing=pairing_from_options(setting_a, setting_b, mode, across_settings),
        shared_pool=shared_pool,
        noise_runs=[str(run) for run in noise or ()],
        quality=quality_options(None, target_p, target_r),
    )
    for note in unpaired_notes(done):
        typer.echo(note, err=True)
    typer.echo(comparison_text(done))
    for item in done.held:
        typer.echo(f"  held back {item}")
    typer.echo(f"report: {done.paths.html}")
    if done.failures:
        raise typer.Exit(code=1)


@command("judge-todo")
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
    from runner.evaluate.unjudged import judge_todo_path, write_judge_todo

    path = out if out is not None else judge_todo_path(run)
    n = write_judge_todo(run, path, k=k, extra_judgments=qrels)
    typer.echo(f"{n} unjudged media to label (top {k}), in:", err=True)
    typer.echo(str(path))
