"""The Typer application, the one error decorator, and the few helpers every command shares."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import NoReturn, ParamSpec, TypeVar

import typer

from runner.errors import VlbenchError

__all__ = ["app", "command", "fail", "warn"]

P = ParamSpec("P")
R = TypeVar("R")

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


def command(
    name: str | None = None, *, group: typer.Typer | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a command on `app` (or on the sub-command `group`); a `VlbenchError` it raises
    becomes `fail(exc)`.

    The one place the CLI maps errors to messages and exit codes:

        @command("judge-todo")
        def judge_todo(run: RunArg) -> None:
            typer.echo(write_judge_todo(run, ...))   # no try/except in the command
    """

    def register(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)  # Typer reads the options from the wrapped signature
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except VlbenchError as exc:
                fail(exc)

        (group or app).command(name)(run)
        return run

    return register
