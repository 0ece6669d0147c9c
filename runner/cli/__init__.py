"""The `vlbench` command: a thin shell over library functions, one module a command group.

Each module under `runner.cli` registers its commands on `app`; library code never prints or
exits, this package maps `VlbenchError` to `error: <message>` and the error's exit code.
"""

from __future__ import annotations

import importlib

from runner.cli._app import app

__all__ = ["app", "main"]

# Command groups, each a module of this package that registers on `app` when imported.
_COMMAND_MODULES = (
    "serve",
    "dataset",
    "token",
    "plan",
    "run",
    "evaluate",
    "export",
    "history",
    "doctor",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(f"runner.cli.{_name}")
importlib.import_module("runner.cli.judge")  # on a line of its own, to merge with other work


def main() -> None:
    """Entry point of the `vlbench` console script."""
    app()
