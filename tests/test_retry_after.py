"""A hostile `Retry-After` (an hour, a date years ahead) over a real socket: capped, noted, and
interruptible. SIGINT/SIGTERM during the wait ends the run with exit 130; a resume gives the rows
of an uninterrupted run.

The hostile server is `helpers_hostile.Hostile`, a tiny aiohttp front on 127.0.0.1 before the
demo server.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_exec import QUERIES, hit_rows, request_rows, run_sync, write_suite
from helpers_hostile import AN_HOUR, YEARS_AHEAD, Hostile
from test_run_cli import vlbench_env

from runner.server.lifecycle import ServerThread
from runner.store import read_manifest

VLBENCH = [sys.executable, "-c", "from runner.cli import main; main()"]


class _Through:
    """A stand-in with a server's `base_url` and `dataset_id`, for `write_suite`."""

    def __init__(self, base_url: str, dataset_id: str) -> None:
        self.base_url, self.dataset_id = base_url, dataset_id


@pytest.fixture
def front(demo_server: ServerThread, request: pytest.FixtureRequest) -> Iterator[Hostile]:
    header, pass_first = getattr(request, "param", (AN_HOUR, 0))
    with Hostile(demo_server.base_url, header, pass_first) as hostile:
        yield hostile


def suite_via(front: Hostile, folder: Path, demo_server: ServerThread, **kw: Any) -> Path:
    through = _Through(front.base_url, demo_server.dataset_id)
    return write_suite(folder, through, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "front",
    [pytest.param((AN_HOUR, 0), id="an-hour"), pytest.param((YEARS_AHEAD, 0), id="years-ahead")],
    indirect=True,
)
def test_a_hostile_retry_after_is_capped_and_noted(
    front: Hostile, demo_server: ServerThread, tmp_path: Path
) -> None:
    """Every search is throttled: each retry waits the cap (0.05 s), not an hour; rows say so."""
    suite = suite_via(
        front,
        tmp_path,
        demo_server,
        queries=QUERIES[:2],
        retries={"max_attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.05},
    )
    result = run_sync(suite, tmp_path / "out")
    # the two queries share one wire request: both recorded as failed after three attempts
    assert result.status == "complete" and result.counts.requests_failed == 2
    assert front.throttled == 3  # all three attempts were sent: nothing froze
    assert result.stats.retry_after_capped == 2  # the third answer is final, not waited on
    (error,) = request_rows(result.run_dir)["error"].unique().to_list()
    assert "HTTP 429" in error
    asked = re.search(r"the server asked Retry-After ([\d,]+) s; waited 0\.05 s \(retries\.", error)
    assert asked and int(asked[1].replace(",", "")) >= 3600  # what it asked, not a cap of ours


def test_a_capped_wait_then_success_keeps_the_rows_and_the_note(
    front: Hostile, demo_server: ServerThread, tmp_path: Path
) -> None:
    """One 429 of an hour, then the server answers: the run ends, same hits, the page noted."""
    direct = write_suite(tmp_path, demo_server, name="direct", queries=QUERIES[2:5])
    expected = hit_rows(run_sync(direct, tmp_path / "direct").run_dir)
    front.pass_first, front.limit = 1, 1  # the second search is throttled once
    flaky = suite_via(
        front,
        tmp_path,
        demo_server,
        name="flaky",
        queries=QUERIES[2:5],
        concurrency=1,
        retries={
            "max_attempts": 5,
            "backoff_s": 0.01,
            "max_backoff_s": 1,
            "max_retry_after_s": 0.1,
        },
    )
    result = run_sync(flaky, tmp_path / "out")
    assert result.status == "complete" and result.counts.requests_failed == 0
    assert hit_rows(result.run_dir) == expected
    errors = request_rows(result.run_dir)["error"].drop_nulls().to_list()
    assert errors == [
        "the server asked Retry-After 3,600 s; waited 0.1 s (retries.max_retry_after_s)"
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_long_retry_after_ends_the_run_and_resume_completes_it(
    front: Hostile, demo_server: ServerThread, tmp_path: Path, sig: signal.Signals
) -> None:
    """The cap is 300 s here: without a cancellable wait the run would sit for minutes."""
    direct = write_suite(tmp_path, demo_server, name="direct", queries=QUERIES)
    expected = hit_rows(run_sync(direct, tmp_path / "direct").run_dir)
    front.pass_first = 4
    suite = suite_via(
        front,
        tmp_path,
        demo_server,
        name="signal",
        queries=QUERIES,
        concurrency=2,
        retries={"max_attempts": 5, "backoff_s": 0.01, "max_backoff_s": 300},
    )
    out = tmp_path / "out"
    process = subprocess.Popen(
        [*VLBENCH, "run", str(suite), "--out", str(out), "--quiet", "--no-report"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=vlbench_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while not front.throttled:  # the run now waits 300 s for the pacer
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        time.sleep(0.2)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)  # a hang, not a speed limit
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "stopped: interrupted" in stdout
    assert "to wait longer than retries.max_retry_after_s" in stdout  # 3600 s asked, 300 s cap
    (run_dir,) = out.glob("suite=*/run_date=*/run_id=*")
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "partial"
    assert manifest["counts"]["requests_done"] < manifest["counts"]["requests_planned"]
    front.hostile = False
    resumed = subprocess.run(
        [*VLBENCH, "run", str(suite), "--out", str(out), "--resume", "--quiet", "--no-report"],
        capture_output=True,
        text=True,
        env=vlbench_env(),
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert read_manifest(run_dir)["status"] == "complete"
    assert hit_rows(run_dir) == expected
