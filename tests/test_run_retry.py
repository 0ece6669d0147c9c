"""`vlbench run SUITE --resume [RUN_DIR] --retry-failed` against the local server.

A run whose requests partly failed for good (a faulty server, one attempt a page) is retried
against a sound server: it must end with exactly the rows of a clean run of the suite, whether the
retry runs through, is stopped half-way, or is killed; the manifest's counts must say so.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import polars.testing
import pytest
from helpers_exec import DEMO_ENV, hit_rows, new_writer, request_rows, run_sync, write_suite
from typer.testing import CliRunner

from runner.api.client import ExploreClient, TokenSource
from runner.cli import app
from runner.errors import UsageError
from runner.execute import ExecuteOptions, RetryPolicy, run_plan
from runner.plan import expand
from runner.report import report_run
from runner.server.lifecycle import ServerThread
from runner.store import read_manifest, scan_hits
from runner.suite import load_suite

StartServer = Callable[..., ServerThread]
TIMING: tuple[str, ...] = ("sent_at", "latency_ms", "attempts")  # differ from run to run
COUNTED = ("requests_planned", "requests_done", "requests_failed", "pages", "hits")


class Done:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def vlbench(*args: str) -> Done:
    """`vlbench run ARGS` in this process, with the demo credentials in its environment."""
    names = {k: None for k in os.environ if k.startswith("VL_")}
    result = CliRunner().invoke(app, ["run", *args], env={**names, **DEMO_ENV})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Done(result.exit_code, result.stdout, result.stderr)


def timeless(run_dir: Path) -> pl.DataFrame:
    return request_rows(run_dir).drop(TIMING)


@pytest.fixture(scope="module")
def clean(demo_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite run against a sound server: the rows every retried run must end with."""
    folder = tmp_path_factory.mktemp("clean")
    result = run_sync(write_suite(folder, demo_server), folder / "reports")
    assert result.status == "complete" and result.counts.requests_failed == 0
    return result.run_dir


def failed_run(server: ServerThread, folder: Path) -> Path:
    """The suite run against `server` with one attempt a page: some requests fail for good.

    Through `run_plan` (no preflight: its own calls would meet the faults too).
    """
    folder.mkdir()
    suite = load_suite(write_suite(folder, server))
    plan = expand(suite)
    writer = new_writer(folder, suite, plan, server.base_url)
    # One worker: the seeded faults meet the requests in one order, the same at every run.
    options = ExecuteOptions(
        concurrency=1, max_pages=3, retry=RetryPolicy(max_attempts=1, backoff_s=0.0)
    )

    async def go() -> Path:
        auth = TokenSource(credentials=server.config.credentials)
        async with ExploreClient(server.base_url, server.dataset_id, auth=auth) as client:
            result = await run_plan(plan, writer, client=client, options=options)
        assert result.status == "complete" and result.exit_code == 1
        return result.run_dir

    return asyncio.run(go())


@pytest.fixture
def failed(start_server: StartServer, tmp_path: Path) -> Path:
    """A finished run (status complete) whose requests partly failed for good."""
    run = failed_run(start_server(fail_rate=0.4, seed=5), tmp_path / "first")
    counts = read_manifest(run)["counts"]
    assert 0 < counts["requests_failed"] < counts["requests_done"]
    requests = request_rows(run)
    failed_keys = requests.filter(pl.col("outcome") != "ok")["request_key"].unique()
    hits = scan_hits(run).filter(pl.col("request_key").is_in(failed_keys.to_list())).collect()
    assert hits.height > 0  # pages before the failed one: old hits the retry must replace
    return run


def assert_clean(run: Path, clean: Path) -> None:
    """`run` holds exactly the rows (timing aside) and the counts of the clean run."""
    polars.testing.assert_frame_equal(timeless(run), timeless(clean))
    assert hit_rows(run) == hit_rows(clean)
    manifest = read_manifest(run)
    assert manifest["status"] == "complete" and "withdrawn" not in manifest
    assert {k: manifest["counts"][k] for k in COUNTED} == {
        k: read_manifest(clean)["counts"][k] for k in COUNTED
    }


def test_retry_failed_ends_with_the_rows_of_a_clean_run(
    failed: Path, clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    to_retry = read_manifest(failed)["counts"]["requests_failed"]
    assert (request_rows(failed)["outcome"] != "ok").sum() > 0
    suite = write_suite(tmp_path, demo_server)  # the same suite, a sound server
    done = vlbench(str(suite), "--resume", str(failed), "--retry-failed", "--no-report")
    assert done.returncode == 0, done.stderr
    assert f"retried {to_retry} request(s) that had failed for good" in done.stdout
    assert f"retrying {to_retry} failed" in done.stderr  # the progress says so from the start
    assert "run complete: 11/11 requests (0 failed)" in done.stdout
    assert_clean(failed, clean)
    manifest = read_manifest(failed)
    assert len(manifest["resumed_at"]) == 1
    # The retry outlives the finish: the manifest and the report say what was sent again.
    [retry] = manifest["retries"]
    assert retry["requests"] == to_retry
    assert manifest["started_at"] < retry["at"] < manifest["ended_at"]
    report = report_run(failed, out_dir=tmp_path / "report").markdown.read_text()
    assert f"- **failed requests sent again**: {to_retry} on {retry['at'][:10]}" in report
    assert "- **resumed**: once, last " in report


def test_a_retry_stopped_half_way_is_completed_by_a_plain_resume(
    failed: Path, clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, demo_server)
    half = run_sync(suite, tmp_path, resume=failed, retry_failed=True, max_requests=1)
    assert half.status == "partial" and half.stats.done == 1
    assert half.counts.requests_done < half.counts.requests_planned
    assert half.counts.requests_failed == 0  # the failed ones not sent yet are withdrawn
    rest = run_sync(suite, tmp_path, resume=failed)
    assert rest.status == "complete" and rest.exit_code == 0
    assert_clean(failed, clean)


def test_a_retry_killed_half_way_resumes_to_the_rows_of_a_clean_run(
    failed: Path, clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    # Slow enough to be killed with some failed requests sent again and some not.
    suite = write_suite(tmp_path, demo_server, rate_limit=8, concurrency=1)
    with subprocess.Popen(
        [sys.executable, "-c", "from runner.cli import main; main()"]
        + ["run", str(suite), "--resume", str(failed), "--retry-failed", "--no-report"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("VL_")}, **DEMO_ENV},
    ) as process:
        journal = failed / "_journal"
        deadline = time.monotonic() + 60
        while not any(s.stat().st_size for s in journal.glob("*.vlj")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no unit was recorded"
            time.sleep(0.02)
        process.kill()
    manifest = read_manifest(failed)
    assert manifest["status"] == "running" and manifest["withdrawn"]
    done = vlbench(str(suite), "--resume", str(failed), "--quiet", "--no-report")
    assert done.returncode == 0, done.stderr
    assert_clean(failed, clean)


def test_retrying_a_run_with_no_failure_leaves_it_as_it_was(
    clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    run = tmp_path / "run"  # a copy: the other tests compare against the clean run
    shutil.copytree(clean, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    suite = write_suite(tmp_path, demo_server)
    done = vlbench(str(suite), "--resume", str(run), "--retry-failed")
    assert done.returncode == 0, done.stderr
    assert "nothing to retry: no request had failed for good" in done.stdout
    assert "the run is left as it was" in done.stdout
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("how", ["cli", "library"])
def test_retry_failed_without_resume_is_a_usage_error(
    demo_server: ServerThread, tmp_path: Path, how: str
) -> None:
    suite = write_suite(tmp_path, demo_server)
    if how == "library":
        with pytest.raises(UsageError, match="--retry-failed: only with --resume"):
            run_sync(suite, tmp_path / "out", retry_failed=True)
    else:
        done = vlbench(str(suite), "--retry-failed", "--out", str(tmp_path / "out"))
        assert done.returncode == 2
        assert done.stderr.startswith("error: --retry-failed: only with --resume")
    assert not (tmp_path / "out").exists()


def test_retry_failed_takes_the_newest_run_even_when_complete(
    failed: Path, clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    out = failed.parents[2]  # reports/, holding only the failed run of this suite
    suite = write_suite(tmp_path, demo_server)
    plain = vlbench(str(suite), "--out", str(out), "--resume")
    assert plain.returncode == 2 and "complete already" in plain.stderr
    done = vlbench(str(suite), "--out", str(out), "--resume", "--retry-failed", "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"run_dir: {failed}" in done.stdout
    assert_clean(failed, clean)


def test_retrying_a_run_of_another_suite_is_refused(
    clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    other = write_suite(tmp_path, demo_server, queries=[{"id": "other", "text": "a red boat"}])
    done = vlbench(str(other), "--resume", str(run), "--retry-failed", "--quiet")
    assert done.returncode == 2
    assert "different suite" in done.stderr
    assert read_manifest(run) == read_manifest(clean)
