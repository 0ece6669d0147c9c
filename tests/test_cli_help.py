"""Every `vlbench` command explains itself, and the package's public names resolve."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer.main

import runner
from runner.cli import app


def _commands() -> dict[str, Any]:
    """Every leaf command of the CLI by its full name, sub-groups (`dataset ...`) included."""
    # Typer vendors its own click, so groups are told apart by their `commands`, not by class.
    root = typer.main.get_command(app)
    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = command

    walk(root, "")
    return found


COMMANDS = _commands()


def test_the_cli_has_the_commands_the_readme_lists() -> None:
    expected = {"validate", "plan", "run", "report", "compare", "judge-todo", "export"}
    expected |= {"history", "merge", "push", "serve", "token", "dataset import"}
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(name: str) -> None:
    command = COMMANDS[name]
    assert command.help, f"vlbench {name} has no help text"
    assert "Example" in command.help or "vlbench " in command.help, (
        f"vlbench {name}'s help shows no example"
    )


def test_public_names_resolve() -> None:
    for name in runner.__all__:
        assert getattr(runner, name) is not None


def test_help_does_not_import_scipy_or_matplotlib() -> None:
    # `vlbench --help` and quick commands must not pay for evaluation's heavy imports.
    code = (
        "import sys, runner.cli; "
        "print(sorted(m for m in ('scipy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
