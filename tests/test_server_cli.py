"""`vlbench serve` as a real subprocess, and `vlbench token`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.api.auth import (
    DEMO_CREDENTIALS,
    ENV_API_KEY,
    ENV_API_SECRET,
    bearer_header,
    verify_token,
)
from runner.errors import VlbenchError
from runner.server.lifecycle import serve_process as running_server
from runner.server.lifecycle import start_serve_process

VLBENCH = str(Path(sys.executable).parent / "vlbench")


@pytest.fixture
def serve_process(demo_dataset_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """`vlbench serve` (the console script) on a free port: the process, base URL, dataset id."""
    with running_server(
        ["--dataset", str(demo_dataset_dir)],
        command=[VLBENCH],
        env={**os.environ, ENV_API_KEY: "", ENV_API_SECRET: ""},
        capture_stderr=True,
    ) as server:
        yield server.process, server.base_url, server.dataset_id


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _token(env: dict[str, str] | None = None) -> str:
    from runner.cli import app

    result = CliRunner().invoke(
        app, ["token", "--ttl", "120"], env={ENV_API_KEY: "", ENV_API_SECRET: "", **(env or {})}
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_serve_answers_and_stops(serve_process: tuple[subprocess.Popen[str], str, str]) -> None:
    process, base_url, dataset_id = serve_process
    assert base_url.startswith("http://127.0.0.1:") and not base_url.endswith(":0")
    status, body = _get(f"{base_url}/api/v1/healthcheck")
    assert status == 200 and b"Green" in body
    status, _ = _get(f"{base_url}/api/v1/dataset/{dataset_id}")
    assert status == 401
    token = _token()
    status, body = _get(f"{base_url}/api/v1/dataset/{dataset_id}", bearer_header(token))
    assert status == 200 and dataset_id.encode() in body
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0


def test_token_uses_the_environment_key() -> None:
    claims = verify_token(_token(), {DEMO_CREDENTIALS.api_key: DEMO_CREDENTIALS.api_secret})
    assert claims["exp"] - claims["iat"] == 120
    env = {ENV_API_KEY: "my-key", ENV_API_SECRET: "my-secret"}
    assert verify_token(_token(env), {"my-key": "my-secret"})["sub"] == "my-key"


def test_serve_refuses_a_missing_dataset(tmp_path: Path) -> None:
    from runner.cli import app

    result = CliRunner().invoke(app, ["serve", "--dataset", str(tmp_path / "nope"), "--port", "0"])
    assert result.exit_code == 2 and "--dataset" in result.stderr


def test_token_refuses_a_bad_ttl() -> None:
    from runner.cli import app

    result = CliRunner().invoke(app, ["token", "--ttl", "0"])
    assert result.exit_code == 2 and "--ttl" in result.stderr


def test_a_server_that_cannot_start_is_reported_with_its_error(tmp_path: Path) -> None:
    with pytest.raises(VlbenchError, match=r"exited with 2 before listening: .*error:"):
        start_serve_process(["--dataset", str(tmp_path / "missing")], capture_stderr=True)


def test_serve_options_for_status_features_and_faults(demo_dataset_dir: Path) -> None:
    args = ["--dataset", str(demo_dataset_dir), "--no-auth", "--dataset-status", "READ ONLY"]
    args += ["--disable-feature", "semantic_search", "--fault", "contract=rename-field"]
    args += ["--fault", "export=canceled"]
    with running_server(args, capture_stderr=True) as server:
        base = f"{server.base_url}/api/v1"
        status, body = _get(f"{base}/user_config?dataset_id={server.dataset_id}")
        features = json.loads(body)["features"]
        assert status == 200 and features["semantic_search"] is False
        assert features["captions_search"] is True
        status, body = _get(f"{base}/dataset/{server.dataset_id}")
        assert json.loads(body)["status_new"] == "READ ONLY"
        query = urllib.parse.urlencode({"entity_type": "IMAGES", "caption": "a dog"})
        status, body = _get(f"{base}/explore/{server.dataset_id}?{query}")
        cluster = json.loads(body)["clusters"][0]
        assert status == 200 and "score" in cluster and "relevance_score" not in cluster
        semantic = json.dumps([{"text": {"op": "semantic", "value": "a dog"}}])
        query = urllib.parse.urlencode({"entity_type": "IMAGES", "vql": semantic})
        status, body = _get(f"{base}/explore/{server.dataset_id}?{query}")
        assert status == 403 and "semantic_search" in json.loads(body)["detail"]


@pytest.mark.parametrize(
    "args, named",
    [
        pytest.param(["--fault", "contract=flip"], "--fault contract=flip", id="fault-value"),
        pytest.param(["--fault", "colour=red"], "--fault colour=red", id="fault-kind"),
        pytest.param(["--disable-feature", "teleport"], "teleport", id="feature"),
        pytest.param(["--dataset-status", "DONE"], "dataset_status", id="status"),
        pytest.param(["--hide-enrichment", "CAPTIONS"], "CAPTIONS", id="enrichment"),
    ],
)
def test_serve_refuses_bad_switches_by_name(args: list[str], named: str) -> None:
    from runner.cli import app

    result = CliRunner().invoke(app, ["serve", "--port", "0", *args])
    assert result.exit_code == 2 and named in result.stderr


def test_serve_help_documents_the_contract_faults() -> None:
    from runner.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("contract=VALUE", "score-type-flip", "rename-field", "export=VALUE", "canceled"):
        assert name in result.output
