"""`vlbench serve --workers N`: N processes answer on one port and stop together."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs in the venv
import pytest

from runner.errors import VlbenchError
from runner.server.lifecycle import DEFAULT_COMMAND, serve_process, stop_serve_process

EXPLORE_FTS = "?entity_type=IMAGES&vql=" + urllib.parse.quote(
    json.dumps([{"text": {"op": "fts", "value": "a dog on a beach"}}])
)


def _listeners(process: psutil.Process, port: int) -> list[int]:
    """Pids of the process's children that listen on `port`."""
    return [
        child.pid
        for child in process.children()
        if any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == port
            for c in child.net_connections(kind="tcp")
        )
    ]


def _get(url: str) -> bytes:
    # urllib opens a new connection for each request, so the kernel spreads them over workers.
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
        return body


def test_two_workers_share_one_port_and_stop_together(demo_dataset_dir: Path) -> None:
    args = ["--dataset", str(demo_dataset_dir), "--no-auth", "--workers", "2"]
    with serve_process(args) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        parent = psutil.Process(server.process.pid)
        workers = _listeners(parent, port)
        assert len(workers) == 2
        url = f"{server.base_url}/api/v1/explore/{server.dataset_id}{EXPLORE_FTS}"
        bodies = {_get(url) for _ in range(20)}
        assert len(bodies) == 1  # every worker gives the same answer
        assert json.loads(bodies.pop())["clusters"]
    assert server.process.returncode == 0
    assert not any(psutil.pid_exists(pid) for pid in workers)


def test_an_export_answers_on_every_worker(demo_dataset_dir: Path) -> None:
    # Each urllib request is a new connection: the polls land on both workers, not only on the
    # one that builds the job (before export jobs were shared, about half answered 404).
    args = ["--dataset", str(demo_dataset_dir), "--no-auth", "--workers", "2"]
    with serve_process(args) as server:
        base = f"{server.base_url}/api/v1/dataset/{server.dataset_id}"
        params = {"labels": '["cat"]', "export_format": "parquet", "file_name": "cats"}
        query = urllib.parse.urlencode(params)
        job = json.loads(_get(f"{base}/export_context_async?{query}"))
        status_url = f"{base}/export_status?export_task_id={job['id']}"
        for _ in range(200):
            status = json.loads(_get(status_url))
            if status["status"] == "COMPLETED":
                break
        seen = [json.loads(_get(status_url)) for _ in range(20)]
        assert {s["status"] for s in seen} == {"COMPLETED"}
        assert {s["entities_count"] for s in seen} == {job["entities_count"]} != {0}
        archives = {_get(f"{base}/export_download/{job['id']}") for _ in range(6)}
        assert len(archives) == 1 and archives.pop().startswith(b"PK")  # one ZIP, any worker


def test_a_worker_that_dies_stops_the_server(demo_dataset_dir: Path) -> None:
    args = ["--dataset", str(demo_dataset_dir), "--no-auth", "--workers", "2"]
    with serve_process(args, capture_stderr=True) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        parent = psutil.Process(server.process.pid)
        victim, other = _listeners(parent, port)
        psutil.Process(victim).send_signal(signal.SIGKILL)
        code = server.process.wait(timeout=60)
        assert server.process.stderr is not None
        stderr = server.process.stderr.read()
    assert code != 0
    assert "vlbench-serve-" in stderr and "stopping the others" in stderr
    assert not psutil.pid_exists(other)


def test_a_worker_that_cannot_start_says_why(tmp_path: Path) -> None:
    not_a_dataset = tmp_path / "empty"
    not_a_dataset.mkdir()
    with pytest.raises(VlbenchError, match=r"worker 0 could not start: .*dataset"):
        with serve_process(
            ["--dataset", str(not_a_dataset), "--no-auth", "--workers", "2"],
            capture_stderr=True,
        ) as server:
            stop_serve_process(server.process)


@pytest.mark.parametrize(
    "extra, message",
    [
        pytest.param(["--workers", "2", "--rate-limit", "5"], "--rate-limit needs one worker"),
        pytest.param(["--workers", "0"], "--workers"),
    ],
    ids=["rate-limit-per-worker", "no-workers"],
)
def test_bad_worker_options_are_usage_errors(extra: list[str], message: str) -> None:
    done = subprocess.run(
        [*DEFAULT_COMMAND, "serve", "--port", "0", "--no-auth", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stdout + done.stderr


def test_console_script_has_the_option() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from runner.cli import main; main()", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "--workers" in done.stdout
