"""`vlbench validate` and `vlbench plan`: what a suite will send, before anything is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from runner.cli._app import command, warn

__all__ = ["plan", "validate"]

SuiteArg = Annotated[Path, typer.Argument(help="The suite YAML file.", show_default=False)]


@command()
def validate(suite: SuiteArg) -> None:
    """Check a suite and every file it names; send nothing, write nothing.

    Prints "ok: N queries, M modes, K requests", or the first problem as
    `file:line: key: what is wrong` with exit code 2. What it notices but does not refuse
    (judgments of query ids the suite lacks) is a `warning:` line on stderr.
    Example: vlbench validate queries/demo.yaml
    """
    # The suite's models and the plan (pydantic, numpy: 0.25 s) are imported to run, not for --help.
    from runner.plan import expand
    from runner.suite import load_suite

    loaded = load_suite(suite)
    requests = len(expand(loaded).requests)
    warn(loaded.warnings)
    typer.echo(f"ok: {len(loaded.queries)} queries, {len(loaded.modes)} modes, {requests} requests")


@command()
def plan(
    suite: SuiteArg,
    shard_of: Annotated[
        str | None, typer.Option("--shard", help="Only shard k of N, e.g. 2/4.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show what a run of a suite will cost: requests, settings, pages, time at the rate limit.

    Example: vlbench plan queries/demo.yaml --shard 1/4
    """
    from runner.plan import expand, parse_shard, shard, summarise  # as in `validate`
    from runner.suite import load_suite

    loaded = load_suite(suite)
    the_plan = expand(loaded)
    if shard_of is not None:
        the_plan = shard(the_plan, *parse_shard(shard_of))
    summary = summarise(the_plan, loaded)
    warn(loaded.warnings)
    if as_json:
        typer.echo(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(summary.render())
