"""Every `vlbench` command explains itself, `vlbench --help` lists them all without importing
them, and the package's public names resolve."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

import runner
import runner.cli
from runner.cli import app
from runner.cli._app import LazyGroup
from runner.cli._commands import COMMANDS as LISTED


def _loaded() -> LazyGroup:
    """The `vlbench` group with every command module of `runner.cli` imported (no placeholder)."""
    for module in pkgutil.iter_modules(runner.cli.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"runner.cli.{module.name}")
    root = typer.main.get_group(app)
    assert isinstance(root, LazyGroup)
    return root


def _commands() -> dict[str, Any]:
    """Every leaf command of the CLI by its full name, sub-groups (`dataset ...`) included."""
    # Typer vendors its own click, so groups are told apart by their `commands`, not by class.
    root = _loaded()
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
DEMO_SUITE = Path(__file__).resolve().parent.parent / "queries" / "demo.yaml"


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


def test_the_table_of_commands_is_the_registered_commands() -> None:
    # `vlbench --help` shows the table's summaries: each must be its command's first paragraph.
    registered = _loaded().commands
    assert list(registered) == list(LISTED)  # no command missing from the table, in its order
    for name, listing in LISTED.items():
        command = registered[name]
        leaves = list(getattr(command, "commands", {}).values()) or [command]
        assert leaves[0].callback is not None, f"{name}: no module registers it"
        assert leaves[0].callback.__module__ == f"runner.cli.{listing.module}", name
        assert inspect.cleandoc(command.help or "").split("\n\n")[0] == listing.summary, name


# What `vlbench --help` and the light commands must not import: the executor, the server,
# pyarrow.dataset (it imports pandas), polars, evaluation's scipy and matplotlib, aiohttp.
HEAVY = (
    "runner.execute",
    "runner.server.app",
    "pyarrow.dataset",
    "pandas",
    "polars",
    "scipy",
    "matplotlib",
    "aiohttp",
)


def _vlbench(argv: list[str], *, load_all: bool = False) -> subprocess.CompletedProcess[str]:
    """`vlbench ARGV` in a fresh interpreter: its stdout, then on a last line the JSON list of the
    watched modules it imported; its stderr and exit code."""
    watched = sorted({f"runner.cli.{c.module}" for c in LISTED.values()} | set(HEAVY))
    code = "\n".join(
        [
            "import importlib, json, sys",
            f"sys.argv = ['vlbench', *{argv!r}]",
            *(f"importlib.import_module({m!r})" for m in watched if load_all and ".cli." in m),
            "from runner.cli import main",
            "try:",
            "    main()",
            "finally:",  # then exit with the command's code
            f"    print(json.dumps([m for m in {watched!r} if m in sys.modules]))",
        ]
    )
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_help_lists_every_command_as_its_own_help_says() -> None:
    lazy = _vlbench(["--help"])
    loaded = _vlbench(["--help"], load_all=True)
    *listing, imported = lazy.stdout.splitlines()
    assert json.loads(imported) == []  # not one command module, nothing heavy
    *expected, imported = loaded.stdout.splitlines()
    assert {f"runner.cli.{c.module}" for c in LISTED.values()} <= set(json.loads(imported))
    assert listing == expected
    shown = {line.split()[1] for line in listing if line.startswith("│ ") and line[2] != " "}
    assert set(LISTED) <= shown


@pytest.mark.parametrize(
    "argv, module",
    [
        pytest.param(["run", "--help"], "run", id="run-help"),
        pytest.param(["export", "--help"], "export", id="export-help"),
        pytest.param(["serve", "--help"], "serve", id="serve-help"),
        pytest.param(["doctor", "--help"], "doctor", id="doctor-help"),
        pytest.param(["validate", "--help"], "plan", id="validate-help"),
        pytest.param(["token"], "token", id="token"),
        pytest.param(["validate", str(DEMO_SUITE)], "plan", id="validate"),
    ],
)
def test_a_command_imports_its_own_module_and_nothing_heavy(argv: list[str], module: str) -> None:
    done = _vlbench(argv)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [f"runner.cli.{module}"]


def test_a_mistyped_command_is_told_the_one_it_resembles() -> None:
    done = _vlbench(["rnu"])  # the group knows every name before any command module is imported
    assert done.returncode == 2
    assert "No such command 'rnu'. Did you mean 'run'?" in done.stderr


def test_doctor_probes_by_default_with_the_doctors_own_default() -> None:
    from runner.api.doctor import DEFAULT_PROBE

    probe = next(p for p in COMMANDS["doctor"].params if p.name == "probe")
    assert probe.default == DEFAULT_PROBE
