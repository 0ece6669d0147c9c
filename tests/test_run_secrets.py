"""The token and the API secret never reach a file, a log line or the terminal.

A run is made with each way of giving credentials (an API key and secret to mint from, a ready
token), against servers that fail, refuse and expire tokens so that error texts get written too.
Then every byte the run wrote (Parquet decoded as well: its pages are compressed) and everything
it printed or logged is searched for the secret and for any JWT.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers_exec import QUERIES, write_suite
from typer.testing import CliRunner

from runner.api.auth import Credentials, mint_token
from runner.cli import app
from runner.server.lifecycle import ServerThread

StartServer = Callable[..., ServerThread]

# Every JWT of ours starts with the base64 of `{"alg":"HS256",...`: `eyJhbGciOi`.
JWT_PREFIX = "eyJhbGciOi"


def everything_written(out: Path) -> list[tuple[str, str]]:
    """(where, text) for every file under `out`: raw bytes, and Parquet decoded cell by cell."""
    found = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        found.append((str(path), path.read_bytes().decode("latin-1")))
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            cells = [str(v) for column in table.columns for v in column.to_pylist()]
            found.append((f"{path} (decoded)", "\n".join(cells)))
    return found


def run_cli(suite: Path, out: Path, env: dict[str, str]) -> tuple[int, str, str]:
    names = {k: None for k in os.environ if k.startswith("VL_")}
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(out)], env={**names, **env})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def assert_absent(needles: list[str], haystacks: list[tuple[str, str]]) -> None:
    for where, text in haystacks:
        for needle in needles:
            assert needle not in text, f"a secret ({needle[:12]}...) is in {where}"


@pytest.fixture
def credentials() -> Credentials:
    return Credentials("secrets-test-key", "s3cret-" + secrets.token_hex(16))


def suite_for(folder: Path, server: ServerThread) -> Path:
    queries = [*QUERIES[:4], {"id": "too-long", "text": "dog " * 600}]  # one 422 error row
    return write_suite(folder, server, queries=queries, rate_limit=15)


def test_minted_tokens_and_secret_stay_hidden(
    start_server: StartServer,
    credentials: Credentials,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Tokens older than 1.2 s are refused: the run mints several; 5xx answers add error rows.
    server = start_server(credentials=credentials, token_ttl_s=1.2, fail_rate=0.2, seed=3)
    caplog.set_level(logging.DEBUG)
    env = {"VL_API_KEY": credentials.api_key, "VL_API_SECRET": credentials.api_secret}
    started = time.time()
    code, stdout, stderr = run_cli(suite_for(tmp_path, server), tmp_path / "out", env)
    ended = time.time()
    assert code == 1, stderr  # the 422 failed; everything else was retried to success
    assert "run complete" in stdout
    # every token this run can have minted: one per second of its life
    minted = [
        mint_token(credentials, ttl_s=600, now=t) for t in range(int(started) - 1, int(ended) + 2)
    ]
    written = everything_written(tmp_path / "out")
    # the search reaches error texts too: the 422's message is in requests.parquet
    assert any("decoded" in where and "HTTP 422" in text for where, text in written)
    outputs = [("stdout", stdout), ("stderr", stderr), ("log", caplog.text), *written]
    assert_absent([credentials.api_secret, JWT_PREFIX, *minted], outputs)


@pytest.mark.parametrize("token_ttl_s", [None, 1.0], ids=["accepted", "expires-mid-run"])
def test_ready_token_stays_hidden(
    start_server: StartServer,
    credentials: Credentials,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    token_ttl_s: float | None,
) -> None:
    # With the expiring token, slow answers make the run outlast the token however fast the
    # client is (14 paced requests at 15/s alone take about as long as the token lives).
    latency_ms = 300 if token_ttl_s is not None else 0
    server = start_server(
        credentials=credentials, token_ttl_s=token_ttl_s, fail_rate=0.2, latency_ms=latency_ms
    )
    caplog.set_level(logging.DEBUG)
    token = mint_token(credentials, ttl_s=3600)
    code, stdout, stderr = run_cli(
        suite_for(tmp_path, server), tmp_path / "out", {"VL_TOKEN": token}
    )
    assert code == 1  # the 422; or, when the token expires, the run failed (or was refused)
    if token_ttl_s is not None:
        assert "401" in stdout + stderr
    outputs = [("stdout", stdout), ("stderr", stderr), ("log", caplog.text)]
    outputs += everything_written(tmp_path / "out")
    assert_absent([token, token.split(".")[2], credentials.api_secret, JWT_PREFIX], outputs)
