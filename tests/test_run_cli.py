"""`vlbench run` as a user runs it: exit codes, the embedded server, Ctrl-C, SIGKILL, --resume.

Most cases run the command in-process (typer's CliRunner); Ctrl-C and SIGKILL need a real
process, started as a user would start it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from helpers_exec import DEMO_ENV, QUERIES, hit_rows, run_sync, write_suite
from typer.testing import CliRunner

from runner.cli import app
from runner.server.lifecycle import ServerThread
from runner.store import find_runs, read_manifest

VLBENCH = [sys.executable, "-c", "from runner.cli import main; main()"]
Rows = list[tuple[Any, ...]]


def vlbench_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VL_")}
    return {**env, **DEMO_ENV, **extra}


class Done:
    """What an in-process `vlbench run` did: exit code, stdout, stderr."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def vlbench(*args: str, **env: str) -> Done:
    """`vlbench run ARGS` in this process, with the demo credentials in its environment."""
    names = {k: None for k in os.environ if k.startswith("VL_")}
    result = CliRunner().invoke(app, ["run", *args], env={**names, **DEMO_ENV, **env})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Done(result.exit_code, result.stdout, result.stderr)


def run_dir_of(stdout: str) -> Path:
    lines = [line for line in stdout.splitlines() if line.startswith("run_dir: ")]
    assert len(lines) == 1, stdout
    return Path(lines[0].removeprefix("run_dir: "))


@pytest.fixture(scope="module")
def slow_suite(demo_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A suite that takes a few seconds at its rate limit (time to interrupt it)."""
    folder = tmp_path_factory.mktemp("slow")
    return write_suite(folder, demo_server, name="slow", rate_limit=8, concurrency=2)


@pytest.fixture(scope="module")
def slow_rows(slow_suite: Path, tmp_path_factory: pytest.TempPathFactory) -> Rows:
    """The rows of the slow suite run without interruption."""
    result = run_sync(slow_suite, tmp_path_factory.mktemp("clean") / "r")
    assert result.status == "complete"
    return hit_rows(result.run_dir)


def test_complete_run_exits_0(demo_server: ServerThread, tmp_path: Path) -> None:
    suite = write_suite(tmp_path, demo_server, queries=QUERIES[:3])
    done = vlbench(str(suite), "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "run complete: 3/3 requests (0 failed)" in done.stdout
    run_dir = run_dir_of(done.stdout)
    assert run_dir.is_relative_to(tmp_path / "out")
    assert read_manifest(run_dir)["status"] == "complete"
    assert done.stderr == ""  # --quiet: no progress


def test_failed_requests_exit_1(demo_server: ServerThread, tmp_path: Path) -> None:
    queries = [QUERIES[2], {"id": "too-long", "text": "dog " * 600}]
    suite = write_suite(tmp_path, demo_server, queries=queries)
    done = vlbench(str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stderr
    assert "(1 failed)" in done.stdout
    assert "progress: 2/2 requests (100%)" in done.stderr  # not a terminal: plain lines


@pytest.mark.parametrize(
    "suite_text, args, message",
    [
        pytest.param(
            "name: x\nqueries: [dog]\nconcurency: 3\n", (), "x.yaml:3: concurency", id="typo"
        ),
        pytest.param("name: x\nqueries: [dog]\n", ("--shard", "3/2"), "shard 3/2", id="shard"),
        pytest.param(
            "name: x\nqueries: [dog]\n", ("--max-requests", "0"), "--max-requests", id="max"
        ),
        pytest.param(
            "name: x\nqueries: [dog]\n", ("some/dir",), "only taken with --resume", id="run-dir"
        ),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, suite_text: str, args: tuple[str, ...], message: str
) -> None:
    suite = tmp_path / "x.yaml"
    suite.write_text(suite_text, encoding="utf-8")
    done = vlbench(str(suite), *args, "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert not (tmp_path / "out").exists()


def test_embedded_server_is_the_default(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, None, queries=QUERIES[2:4], rate_limit=50)
    done = vlbench(str(suite), "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(run_dir_of(done.stdout))
    assert manifest["base_url"].startswith("http://127.0.0.1:")
    assert manifest["dataset_id"] == "demo"
    assert manifest["counts"]["hits"] > 0


def wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def recorded_units(out: Path) -> int:
    """Units in the journal of the run being written under `out` (0 before it exists)."""
    segments = list(out.rglob("_journal/*.vlj"))
    return sum(1 for s in segments if s.stat().st_size > 0)


def start_run(suite: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*VLBENCH, "run", str(suite), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=vlbench_env(),
    )


def test_ctrl_c_leaves_a_partial_run_that_resumes(
    slow_suite: Path, slow_rows: Rows, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = start_run(slow_suite, out)
    wait_for(lambda: recorded_units(out) > 0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "stopped: interrupted" in stdout
    run_dir = run_dir_of(stdout)
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "partial"
    assert 0 < manifest["counts"]["requests_done"] < manifest["counts"]["requests_planned"]
    for name in ("requests.parquet", "hits.parquet", "judgments.parquet"):
        pq.read_table(run_dir / name)  # valid Parquet
    resumed = vlbench(str(slow_suite), "--out", str(out), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert run_dir_of(resumed.stdout) == run_dir
    assert hit_rows(run_dir) == slow_rows


def test_sigkill_then_resume_gives_the_rows_of_an_uninterrupted_run(
    slow_suite: Path, slow_rows: Rows, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = start_run(slow_suite, out)
    wait_for(lambda: recorded_units(out) > 0)
    time.sleep(0.3)  # mid-way: more units land, one is likely being written
    process.kill()
    process.communicate(timeout=30)
    (run_dir,) = find_runs(out)
    assert read_manifest(run_dir)["status"] == "running"  # nobody finished it
    resumed = vlbench(str(slow_suite), "--out", str(out), "--resume", str(run_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped" in resumed.stdout
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "complete" and len(manifest["resumed_at"]) == 1
    assert hit_rows(run_dir) == slow_rows


def test_resume_of_a_complete_run_is_refused(demo_server: ServerThread, tmp_path: Path) -> None:
    suite = write_suite(tmp_path, demo_server, queries=QUERIES[:1])
    assert vlbench(str(suite), "--out", str(tmp_path / "out"), "--quiet").returncode == 0
    again = vlbench(str(suite), "--out", str(tmp_path / "out"), "--resume")
    assert again.returncode == 2
    assert "complete" in again.stderr


def test_help_has_an_example() -> None:
    done = vlbench("--help")
    assert done.returncode == 0
    assert "Example: vlbench run" in done.stdout
