"""`vlbench judge`: grade a run's unjudged top-k hits in the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli._app import app, fail
from runner.errors import UsageError, VlbenchError

__all__ = ["judge"]


@app.command()
def judge(
    run: Annotated[
        str, typer.Argument(help="A run directory, or an s3:// / gs:// URI.", show_default=False)
    ],
    rater: Annotated[
        str, typer.Option("--rater", help="Your name (letters, digits, . _ -).", show_default=False)
    ],
    k: Annotated[int, typer.Option("--k", help="Depth: top k of every mode and setting.")] = 10,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: a free one).")] = 0,
    overlap: Annotated[
        bool,
        typer.Option(
            "--overlap",
            help="Grade the hits other raters graded (their grades hidden), for agreement.",
        ),
    ] = False,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="A folder of the images, by file name, for thumbnails."),
    ] = None,
    qrels: Annotated[
        list[Path] | None,
        typer.Option(
            "--qrels", help="Extra TREC qrels file (repeatable): hits it judges are done."
        ),
    ] = None,
) -> None:
    """Grade the run's unjudged top-k hits in a local web page; print its URL; Ctrl-C closes it.

    Keys: 0-3 grade, arrows move, u undoes. Each label is appended to the judgments store
    beside the suite (reports/suite=NAME/_judgments/) as it is given; `vlbench report` counts
    them. Several raters: each names themself; --overlap shows a rater the hits others graded.
    A run on s3:// or gs:// is judged in place: the labels beside it are read first, and this
    session's are sent there when the page closes.
    Example: vlbench judge reports/suite=demo/run_date=2024-11-24/run_id=0200 --rater ana --k 5
    """
    from runner.judge.app import run_judge
    from runner.judge.session import open_session

    if not 0 <= port <= 65535:
        fail(UsageError(f"--port: {port} is not a port (0-65535)"))
    try:
        session = open_session(
            run, rater=rater, k=k, overlap=overlap, extra_judgments=qrels, images=images
        )
    except VlbenchError as exc:
        fail(exc)
    done, total = session.progress()
    if total == 0:
        what = "graded by another rater" if overlap else "left unjudged"
        typer.echo(f"nothing to judge: no hit in the top {k} is {what}", err=True)
        return
    typer.echo(
        f"{total} hits to judge ({done} already graded by {rater}); Ctrl-C to stop", err=True
    )
    try:
        run_judge(session, port=port, ready=lambda url: typer.echo(url))
    except OSError as exc:
        fail(UsageError(f"--port: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"))
    typer.echo(f"labels in {session.store}", err=True)
    if session.shared is not None:
        typer.echo(f"{session.sent} new label line(s) sent to {session.shared.uri}", err=True)
