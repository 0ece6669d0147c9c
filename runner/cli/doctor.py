"""`vlbench doctor`: is the API still the one vlbench expects? One line a check."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from runner.cli._app import app, fail
from runner.errors import UsageError, VlbenchError

if TYPE_CHECKING:
    from runner.api.doctor import DoctorReport

__all__ = ["doctor"]

# `runner.api.doctor.DEFAULT_PROBE`, written out: importing the doctor (the client, polars) would
# cost `doctor --help` 0.6 s. tests/test_cli_help.py checks that the two agree.
DEFAULT_PROBE = "a dog"


@app.command()
def doctor(
    suite: Annotated[
        Path | None,
        typer.Argument(
            help="A suite: probe its API (the embedded server when it has no base_url)."
        ),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="Probe this API instead of a suite's.")
    ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="With --base-url.")] = None,
    probe: Annotated[str, typer.Option("--probe", help="The probe query's text.")] = DEFAULT_PROBE,
    export: Annotated[
        bool, typer.Option("--export/--no-export", help="Also start one export job.")
    ] = True,
) -> None:
    """Send ~20 fixed probes and check what vlbench relies on; one line a check.

    Checks auth, dataset status and enrichments, feature flags, each mode's answer shape, score
    type and order, that a stricter cut-off's results are a subset of a looser one's, how
    pagination ends, and that an export job starts and its metadata parses.
    Exit code: 0 as expected, 1 the contract changed, 2 cannot reach or authenticate.
    Example: vlbench doctor queries/demo.yaml
             vlbench doctor --base-url https://app.visual-layer.com --dataset $DATASET_ID
    """
    try:
        report = asyncio.run(_diagnose(suite, base_url, dataset, probe, export))
    except VlbenchError as exc:
        fail(exc)
    for finding in report.findings:
        typer.echo(finding.line())
    verdict = ("as expected", "the contract changed", "cannot reach or authenticate")
    typer.echo(f"doctor: {verdict[report.exit_code]}")
    raise typer.Exit(code=report.exit_code)


async def _diagnose(
    suite: Path | None, base_url: str | None, dataset: str | None, probe: str, export: bool
) -> DoctorReport:
    from runner.api.doctor import diagnose, diagnose_url  # the client and the executor: to run
    from runner.execute import suite_client
    from runner.suite import load_suite

    if base_url is not None:
        if suite is not None or dataset is None:
            raise UsageError("--base-url takes --dataset and no suite")
        return await diagnose_url(base_url, dataset, probe_text=probe, export=export)
    if suite is None:
        raise UsageError("give a suite, or --base-url URL --dataset ID")
    async with suite_client(load_suite(suite)) as client:
        return await diagnose(client, probe_text=probe, export=export)
