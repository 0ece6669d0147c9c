"""`vlbench run`: a suite's requests, rate-limited and resumable, into a run directory."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from runner.cli._app import command, warn
from runner.errors import UsageError, VlbenchError

if TYPE_CHECKING:
    from runner.execute import RunResult
    from runner.suite import Suite

__all__ = ["run", "summary"]


@command()
def run(
    suite: Annotated[Path, typer.Argument(help="The suite YAML file.")],
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUN_DIR", help="With --resume: the run to resume (default: the newest)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where run directories go.")] = Path("reports"),
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Resume RUN_DIR, or the newest unfinished run of the suite."),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option("--shard", help="Run shard k/N of the suite at 1/N of its rate limit."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Evaluate the run and write its report.")
    ] = True,
    max_requests: Annotated[
        int | None,
        typer.Option(
            "--max-requests", help="Send at most N requests (a trial); the run stays partial."
        ),
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="With --resume: send again the requests that failed for good; their new rows "
            "replace the old (a complete run is taken too).",
        ),
    ] = False,
) -> None:
    """Run a suite against the API (or the embedded local server) and store every hit.

    Exit code: 0 complete, 1 some requests failed for good (or the run failed),
    2 bad input, 130 interrupted (resume it with --resume).

    Example: vlbench run queries/demo.yaml --out reports
    Resume:  vlbench run queries/demo.yaml --resume reports/suite=demo/run_date=.../run_id=...
    Retry:   vlbench run queries/demo.yaml --resume --retry-failed
    """
    # The plan and the suite's models (and in `_run` the executor): to run, not for --help.
    from runner.plan import parse_shard
    from runner.suite import load_suite

    if run_dir is not None and not resume:
        raise UsageError(f"{run_dir}: a run directory is only taken with --resume")
    if max_requests is not None and max_requests < 1:
        raise UsageError(f"--max-requests {max_requests}: must be at least 1")
    shard_of = parse_shard(shard) if shard is not None else None
    loaded = load_suite(suite)
    warn(loaded.warnings)
    target: Path | bool = run_dir if run_dir is not None else resume
    result = asyncio.run(_run(loaded, out, target, shard_of, quiet, max_requests, retry_failed))
    typer.echo(summary(result))
    # An interrupted run ends now (within the 2 s a Ctrl-C promises); `vlbench report` later.
    ended = result.status in ("complete", "partial") and not result.interrupted
    if report and ended and result.touched:
        _report(result.run_dir)
    raise typer.Exit(code=result.exit_code)


def _report(run_dir: Path) -> None:
    """Evaluate the finished run and print where its report is (a report failure fails no run)."""
    from runner.report import report_run  # scipy and matplotlib: only when a report is wanted

    try:
        paths = report_run(run_dir)
    except VlbenchError as exc:
        typer.echo(f"warning: no report: {exc}", err=True)
        return
    typer.echo(f"report: {paths.html}")


async def _run(
    suite: Suite,
    out: Path,
    resume: Path | bool,
    shard_of: tuple[int, int] | None,
    quiet: bool,
    max_requests: int | None,
    retry_failed: bool,
) -> RunResult:
    from runner.execute import RunControl, run_suite
    from runner.execute.progress import make_progress

    control = RunControl()
    loop = asyncio.get_running_loop()
    # First Ctrl-C (or SIGTERM): stop taking work and finish the run `partial`; second: abort.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, control.stop)
    try:
        with make_progress(quiet=quiet) as progress:
            return await run_suite(
                suite,
                out=out,
                resume=resume,
                shard_of=shard_of,
                max_requests=max_requests,
                progress=progress,
                control=control,
                retry_failed=retry_failed,
            )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def summary(result: RunResult) -> str:
    """What a finished run says on stdout: its status, counts and where it is."""
    counts, stats = result.counts, result.stats
    rate = stats.sent / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
    lines = [
        f"run {result.status}: {counts.requests_done}/{counts.requests_planned} requests"
        f" ({counts.requests_failed} failed), {counts.pages} pages, {counts.hits} hits",
        f"this session: {stats.done} requests, {stats.sent} HTTP requests"
        f" ({stats.retries} retries) in {stats.elapsed_s:.1f} s, {rate:.1f} req/s",
    ]
    if stats.skipped:
        lines.append(f"skipped {stats.skipped} requests done before (resume)")
    if stats.retried:
        lines.append(f"retried {stats.retried} request(s) that had failed for good")
    elif stats.retried == 0:
        left = "" if result.touched else "; the run is left as it was"
        lines.append(f"nothing to retry: no request had failed for good{left}")
    if stats.retry_after_capped:
        lines.append(
            f"the server asked {stats.retry_after_capped} time(s) to wait longer than "
            "retries.max_retry_after_s; waited that long (see the error text in requests.parquet)"
        )
    if result.message:
        lines.append(result.message)
    lines.append(f"run_dir: {result.run_dir}")
    return "\n".join(lines)
