"""`vlbench history`: each measure over time per mode, and the nights that moved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli._app import command

__all__ = ["history"]


@command()
def history(
    suite_dir: Annotated[
        str,
        typer.Argument(
            help="reports/suite=<name>, or a root with --suite; s3:// and gs:// too.",
            show_default=False,
        ),
    ],
    suite: Annotated[str | None, typer.Option("--suite", help="The suite, under a root.")] = None,
    measure: Annotated[
        list[str] | None, typer.Option("--measure", "-m", help="Only this measure (repeat).")
    ] = None,
    mode: Annotated[
        list[str] | None, typer.Option("--mode", help="Only this mode (repeat).")
    ] = None,
    unit: Annotated[str, typer.Option("--unit", help="media or cluster.")] = "media",
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Where the HTML page goes (default: SUITE_DIR/history.html)."),
    ] = None,
    evaluate: Annotated[
        bool, typer.Option("--evaluate", help="Evaluate local runs without metrics.parquet.")
    ] = False,
    k: Annotated[float, typer.Option("--k", help="Moved when |delta| > k x sigma.")] = 3.0,
    alpha: Annotated[float, typer.Option("--alpha", help="Paired t-test level.")] = 0.01,
    min_delta: Annotated[float, typer.Option("--min-delta", help="Smallest move.")] = 0.01,
    min_history: Annotated[int, typer.Option("--min-history", help="Nights for sigma.")] = 3,
    nights: Annotated[int, typer.Option("--nights", help="Nights shown in the table.")] = 30,
    rule_name: Annotated[
        str,
        typer.Option(
            "--rule",
            help="noise: significant after Holm AND above the noise floor of quiet nights (as"
            " compare --noise); either: |delta| > k x sigma OR significant.",
        ),
    ] = "noise",
) -> None:
    """Show each measure over time per mode, flag the nights that moved, write an HTML page.

    Reads every run's metrics.parquet through DuckDB (hive-partitioned, in place). A night
    moved when |delta| >= --min-delta, a paired t-test against the previous night gives
    p < --alpha after Holm, and |delta| is above the noise floor of the earlier quiet nights
    (the band shown); --rule either: |delta| > k x sigma of the earlier nights OR significant.
    Example: vlbench history reports/suite=demo --measure nDCG@10 --html history.html
    """
    # Imported here: DuckDB, SciPy and matplotlib would slow every other command's start.
    from runner.evaluate.history import HistoryRule, load_history
    from runner.report.history import default_page, render_text, write_history_html

    rule = HistoryRule(
        k=k, min_history=min_history, alpha=alpha, min_delta=min_delta, rule=rule_name
    )
    result = load_history(
        suite_dir,
        suite=suite,
        measures=measure,
        modes=mode,
        unit=unit,
        rule=rule,
        evaluate_missing=evaluate,
    )
    target = html if html is not None else default_page(result)
    written = write_history_html(result, target, max_nights=nights * 2) if target else None
    typer.echo(render_text(result, max_nights=nights))
    if written is not None:
        typer.echo(f"html: {written}")
