"""The Typer application, the one error decorator, and the few helpers every command shares.

`app` imports a command's module only when that command runs or shows its own help: its group,
`LazyGroup`, lists the commands from the table in `_commands` (so `vlbench --help` imports none).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from runner.cli._commands import COMMANDS
from runner.errors import VlbenchError

if TYPE_CHECKING:  # the click Typer vendors, whose classes TyperGroup's methods take
    from typer._click import Command, Context

__all__ = ["LazyGroup", "app", "command", "fail", "warn"]

P = ParamSpec("P")
R = TypeVar("R")


class LazyGroup(TyperGroup):
    """The `vlbench` group: it lists every command of `COMMANDS`, imports one when it runs.

    Until its module is imported, a command is a placeholder that holds its name and summary,
    enough for `vlbench --help` and for "Did you mean 'run'?". Resolving it to run (or to show
    its own --help) imports the module, whose `@command()` registers it on `app`, and swaps the
    placeholder for the real command. A command registered before the group is built (its
    module imported already) is used as it is.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        registered = dict(self.commands)  # of modules imported before the group was built
        self._unloaded = {n: c.module for n, c in COMMANDS.items() if n not in registered}
        listed = {
            n: registered.get(n) or TyperCommand(n, help=c.summary) for n, c in COMMANDS.items()
        }
        self.commands = listed | registered  # in the table's order; one not in it comes last

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        name, found, rest = super().resolve_command(ctx, args)
        if name in self._unloaded:
            found = self.load(name)
        return name, found, rest

    def load(self, name: str) -> Command:
        """The command `name` itself, its module imported first if it is not yet."""
        module = self._unloaded.pop(name, None)
        if module is not None:
            importlib.import_module(f"runner.cli.{module}")
            self.commands[name] = typer.main.get_group(app).commands[name]
        return self.commands[name]


app = typer.Typer(
    name="vlbench",
    help="Run image-search query suites against the Explore API, store every hit, measure quality.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    # Does nothing; a callback makes Typer build `app` as a group even while fewer than two
    # commands are registered (none is, before a command runs).
    pass


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
