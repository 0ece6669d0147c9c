"""The Typer application and the few helpers every command shares."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

import typer

from runner.errors import VlbenchError

__all__ = ["app", "fail", "warn"]

app = typer.Typer(
    name="vlbench",
    help="Run image-search query suites against the Explore API, store every hit, measure quality.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(exc: VlbenchError) -> NoReturn:
    """Print `error: <message>` on stderr and exit with the error's code."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=exc.exit_code)


def warn(messages: Iterable[str]) -> None:
    """Print each of a library result's warnings as `warning: <message>` on stderr."""
    for message in messages:
        typer.echo(f"warning: {message}", err=True)
