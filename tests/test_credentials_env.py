"""Credentials from the environment: one reader, one error, and a 401 that says what to set.

(`demo_server` is typed Any here: the server's thread class is moving between modules.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from helpers_exec import run_sync, write_suite
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import AuthError


def test_run_without_credentials_names_the_unset_variables(
    tmp_path: Path, demo_server: Any
) -> None:
    suite = write_suite(tmp_path, demo_server)
    with pytest.raises(AuthError) as caught:
        run_sync(suite, tmp_path / "out", environ={})
    message = str(caught.value)
    assert "HTTP 401" in message
    assert "VL_TOKEN is unset, and VL_API_KEY and VL_API_SECRET are unset" in message
    assert not (tmp_path / "out").exists()  # refused at preflight, nothing written


def test_the_suites_own_variable_names_are_the_ones_named(tmp_path: Path, demo_server: Any) -> None:
    auth = {"token_env": "NIGHTLY_TOKEN", "api_key_env": "NIGHTLY_KEY", "api_secret_env": "NS"}
    suite = write_suite(tmp_path, demo_server, auth=auth)
    with pytest.raises(AuthError, match="NIGHTLY_TOKEN is unset, and NIGHTLY_KEY and NS are unset"):
        run_sync(suite, tmp_path / "out", environ={"VL_TOKEN": ""})


def test_cli_prints_one_line_naming_the_variables_and_no_secret(
    tmp_path: Path, demo_server: Any
) -> None:
    suite = write_suite(tmp_path, demo_server)
    unset = {k: None for k in os.environ if k.startswith("VL_")}
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path)], env=unset)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    assert "VL_TOKEN is unset" in result.stderr

    half = {**unset, "VL_API_SECRET": "half-a-pair-secret"}
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path)], env=half)
    assert result.exit_code == 2, result.output
    assert "VL_API_KEY is not set" in result.stderr
    assert "half-a-pair-secret" not in result.output + result.stderr


def test_token_command_refuses_half_a_pair_like_the_run() -> None:
    unset = {k: None for k in os.environ if k.startswith("VL_")}
    result = CliRunner().invoke(app, ["token"], env={**unset, "VL_API_KEY": "k"})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: VL_API_SECRET is not set: set both VL_API_KEY and VL_API_SECRET, or neither"
    )
