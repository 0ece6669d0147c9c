"""The `vlbench` command: a thin shell over library functions, one module a command group.

Each module under `runner.cli` registers its commands on `app`; library code never prints or
exits, this package maps `VlbenchError` to `error: <message>` and the error's exit code. A
command's module is imported only when the command runs (`runner.cli._commands` lists them), so
that `vlbench --help` and the light commands start fast.
"""

from __future__ import annotations

from runner.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `vlbench` console script."""
    app()
