"""Resuming with `retry_failed`: failed keys are withdrawn, their new rows replace the old ones.

The run holds the rows of each key once whenever the writer dies: right after the withdrawal is
recorded, in the middle of the retry (some keys sent again, some failing again), or in `finish`.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import polars.testing
import pyarrow as pa
import pytest
from test_resume import REPO, SUITE_HASH, Crash, crash_finish_before_hits, create, die, unit

from runner.errors import RunError
from runner.store import (
    RunWriter,
    _files,
    _writer,
    open_run,
    read_manifest,
    scan_hits,
    scan_requests,
    write_manifest,
)
from runner.store._layout import FINALISE_FILE, PARTS_DIR
from runner.store.synthetic import synthetic_unit

UNITS = range(30)
FAILED = {f"k{i:04d}" for i in UNITS if i % 11 == 0}  # unit(i) fails for these: 0, 11, 22


def fixed(i: int) -> tuple[pa.Table, pa.Table]:
    """Unit `i` as a retry that succeeds sends it back (a unit that did not fail is unchanged)."""
    return synthetic_unit(
        f"k{i:04d}", query_id=f"q{i % 7}", pages=1 + i % 3, hits_per_page=(i % 5) * 3
    )


def still_failing(i: int) -> tuple[pa.Table, pa.Table]:
    """Unit `i` failing again, on another page than before (so that its rows differ)."""
    return synthetic_unit(
        f"k{i:04d}", query_id=f"q{i % 7}", pages=3, hits_per_page=4, outcome="http_error"
    )


def record(
    writer: RunWriter, make: Callable[[int], tuple[pa.Table, pa.Table]], units: Iterable[int]
) -> None:
    done = writer.completed_keys()
    for i in units:
        if f"k{i:04d}" not in done:
            writer.record(*make(i))


def assert_rows(
    run: Path, expected: list[tuple[pa.Table, pa.Table]], *, running: bool = False
) -> None:
    """The run (or a running run's Parquet so far) holds exactly these units' rows."""
    for scan, index, sort in ((scan_requests, 0, "page"), (scan_hits, 1, "rank")):
        want = pl.from_arrow(pa.concat_tables([u[index] for u in expected]))
        assert isinstance(want, pl.DataFrame)
        got = scan(run, allow_running=running).collect()
        polars.testing.assert_frame_equal(
            got.sort("request_key", sort), want.sort("request_key", sort)
        )


def assert_counts(run: Path, expected: list[tuple[pa.Table, pa.Table]]) -> None:
    counts = open_run(run).counts
    keys = {r.column("request_key")[0].as_py() for r, _ in expected}
    failed = {
        r.column("request_key")[0].as_py()
        for r, _ in expected
        if any(o != "ok" for o in r.column("outcome").to_pylist())
    }
    assert counts.requests_done == len(keys)
    assert counts.requests_failed == len(failed)
    assert counts.pages == sum(r.num_rows for r, _ in expected)
    assert counts.hits == sum(h.num_rows for _, h in expected)


def finished_with_failures(root: Path, status: str = "complete", **kwargs: Any) -> Path:
    w = create(root, **kwargs)
    record(w, unit, UNITS)
    return w.finish(status).path


# -- the retry -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["complete", "partial", "failed"])
@pytest.mark.parametrize("roll_rows", [40, 50_000])
def test_retry_replaces_the_failed_rows_of_a_finished_run(
    tmp_path: Path, status: str, roll_rows: int
) -> None:
    run = finished_with_failures(tmp_path, status, roll_rows=roll_rows)
    assert open_run(run).counts.requests_failed == len(FAILED)

    w = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=True, roll_rows=roll_rows)
    assert w.retried == len(FAILED)
    assert w.completed_keys() == {f"k{i:04d}" for i in UNITS} - FAILED
    assert w.counts.requests_failed == 0 and w.counts.requests_done == len(UNITS) - len(FAILED)
    (withdrawn,) = read_manifest(run)["withdrawn"]
    assert withdrawn == {"before_part": 0, "keys": sorted(FAILED)}
    record(w, fixed, UNITS)
    info = w.finish("complete")

    assert_rows(run, [fixed(i) for i in UNITS])
    assert_counts(run, [fixed(i) for i in UNITS])
    assert info.counts.requests_done == len(UNITS) and info.counts.requests_failed == 0
    assert "withdrawn" not in read_manifest(run)


def test_retry_of_a_killed_run_withdraws_rows_in_parts_and_journal(tmp_path: Path) -> None:
    w = create(tmp_path, roll_rows=40)
    record(w, unit, UNITS)
    assert any((w.run_dir / PARTS_DIR).iterdir()) and w.buffered_rows > 0
    die(w)  # failed rows in parts and in the journal, no final files

    again = RunWriter.resume(w.run_dir, suite_hash=SUITE_HASH, retry_failed=True, roll_rows=40)
    assert again.retried == len(FAILED)
    (withdrawn,) = read_manifest(w.run_dir)["withdrawn"]
    assert withdrawn["before_part"] == max(_files.committed_parts(w.run_dir)) + 1
    assert_rows(w.run_dir, [fixed(i) for i in UNITS if i % 11], running=True)
    record(again, fixed, UNITS)
    assert_rows(again.finish("complete").path, [fixed(i) for i in UNITS])


def test_retry_of_a_run_without_failures_withdraws_nothing(tmp_path: Path) -> None:
    w = create(tmp_path)
    record(w, fixed, range(10))
    run = w.finish("partial").path
    again = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=True)
    assert again.retried == 0 and len(again.completed_keys()) == 10
    assert "withdrawn" not in read_manifest(run)
    record(again, fixed, range(12))
    assert_rows(again.finish("complete").path, [fixed(i) for i in range(12)])


def test_resume_without_retry_still_refuses_a_complete_run(tmp_path: Path) -> None:
    run = finished_with_failures(tmp_path)
    with pytest.raises(RunError, match="run is complete"):
        RunWriter.resume(run, suite_hash=SUITE_HASH)
    with pytest.raises(RunError, match="different suite"):
        RunWriter.resume(run, suite_hash="sha256:other", retry_failed=True)
    assert read_manifest(run)["status"] == "complete"


def test_a_corrupt_withdrawal_is_refused(tmp_path: Path) -> None:
    run = finished_with_failures(tmp_path, "partial")
    manifest = read_manifest(run)
    manifest["withdrawn"] = [{"keys": ["k0000"]}]  # no before_part
    write_manifest(run, manifest)
    with pytest.raises(RunError, match="withdrawn is malformed"):
        RunWriter.resume(run, suite_hash=SUITE_HASH)


# -- crashes at chosen instants --------------------------------------------------------------------


@pytest.mark.parametrize("retry_again", [False, True])
def test_crash_right_after_the_withdrawal(tmp_path: Path, retry_again: bool) -> None:
    run = finished_with_failures(tmp_path, roll_rows=40)
    die(RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=True))
    assert read_manifest(run)["status"] == "running"

    # The decision stands, with or without --retry-failed the second time.
    again = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=retry_again)
    assert again.retried == 0
    assert again.completed_keys() == {f"k{i:04d}" for i in UNITS} - FAILED
    record(again, fixed, UNITS)
    assert_rows(again.finish("complete").path, [fixed(i) for i in UNITS])
    assert_counts(run, [fixed(i) for i in UNITS])


@pytest.mark.parametrize("roll_rows", [1, 50_000])
@pytest.mark.parametrize("retry_again", [False, True])
def test_crash_in_the_middle_of_the_retry(
    tmp_path: Path, roll_rows: int, retry_again: bool
) -> None:
    run = finished_with_failures(tmp_path, roll_rows=roll_rows)
    w = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=True, roll_rows=roll_rows)
    w.record(*fixed(0))  # sent again, and this time it worked
    w.record(*still_failing(11))  # sent again, failed again
    die(w)  # 22 not sent yet

    again = RunWriter.resume(
        run, suite_hash=SUITE_HASH, retry_failed=retry_again, roll_rows=roll_rows
    )
    assert again.retried == (1 if retry_again else 0)
    sent_again = {"k0000"} | (set() if retry_again else {"k0011"})
    assert again.completed_keys() == {f"k{i:04d}" for i in UNITS} - FAILED | sent_again
    assert_rows(
        run,
        [
            fixed(0),
            *([] if retry_again else [still_failing(11)]),
            *(fixed(i) for i in UNITS if i % 11),
        ],
        running=True,
    )
    record(again, fixed, UNITS)
    expected = [fixed(i) for i in UNITS if i != 11 or retry_again]
    if not retry_again:
        expected.append(still_failing(11))
    assert_rows(again.finish("complete").path, expected)
    assert_counts(run, expected)
    assert "withdrawn" not in read_manifest(run)


def test_a_second_retry_before_the_finish_keeps_the_first(tmp_path: Path) -> None:
    run = finished_with_failures(tmp_path, roll_rows=40)
    w = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=True, roll_rows=40)
    w.record(*still_failing(0))
    w.record(*fixed(11))
    w.finish("partial")  # 22 still to send: the withdrawal is applied by this finish
    assert "withdrawn" not in read_manifest(run)
    assert open_run(run).counts.requests_done == len(UNITS) - 1

    again = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=True)
    assert again.retried == 1  # k0000, failed again
    record(again, fixed, UNITS)
    assert_rows(again.finish("complete").path, [fixed(i) for i in UNITS])


def _dies_writing_finalise(path: Path, data: bytes) -> None:
    raise Crash()


@pytest.mark.parametrize("roll_rows", [40, 50_000])
def test_crash_in_finish_before_it_decided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roll_rows: int
) -> None:
    run = finished_with_failures(tmp_path, roll_rows=roll_rows)
    w = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=True, roll_rows=roll_rows)
    record(w, fixed, UNITS)
    monkeypatch.setattr(_writer, "atomic_write_bytes", _dies_writing_finalise)
    with pytest.raises(Crash):
        w.finish("complete")
    monkeypatch.undo()
    die(w)
    assert not (run / FINALISE_FILE).exists()
    assert read_manifest(run)["withdrawn"]  # the old final files still hold the failed rows

    again = RunWriter.resume(run, suite_hash=SUITE_HASH)
    assert again.completed_keys() == {f"k{i:04d}" for i in UNITS}
    assert again.counts.requests_failed == 0
    assert_rows(again.finish("complete").path, [fixed(i) for i in UNITS])


@pytest.mark.parametrize("status", ["partial", "complete"])
def test_crash_in_finish_after_it_decided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    run = finished_with_failures(tmp_path, roll_rows=40)
    w = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=True, roll_rows=40)
    record(w, fixed, range(20))  # 22 not sent again yet
    monkeypatch.setattr(_files, "roll_forward", lambda run_dir: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        w.finish(status)
    monkeypatch.undo()
    die(w)
    assert (run / FINALISE_FILE).exists()

    again = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=status == "complete")
    assert again.recovery.rolled_forward
    assert "withdrawn" not in read_manifest(run)
    assert again.completed_keys() == {f"k{i:04d}" for i in UNITS} - {"k0022"}
    record(again, fixed, UNITS)
    assert_rows(again.finish("complete").path, [fixed(i) for i in UNITS])


def test_crash_between_the_renames_of_the_final_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = finished_with_failures(tmp_path, roll_rows=40)
    w = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=True, roll_rows=40)
    record(w, fixed, UNITS)
    crash_finish_before_hits(w, "complete", monkeypatch)
    # A new requests.parquet beside the old hits.parquet: the roll-forward completes the finish.
    with pytest.raises(RunError, match="run is complete"):
        RunWriter.resume(run, suite_hash=SUITE_HASH)
    assert not (run / FINALISE_FILE).exists()
    assert_rows(run, [fixed(i) for i in UNITS])
    assert_counts(run, [fixed(i) for i in UNITS])
    assert "withdrawn" not in read_manifest(run)


# -- SIGKILL at random instants of a retry ------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from test_resume import SUITE_HASH
    from test_store_retry import fixed
    from runner.store import RunWriter

    run_dir, n, retry = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "retry"
    w = RunWriter.resume(run_dir, suite_hash=SUITE_HASH, retry_failed=retry, roll_rows=120)
    done = w.completed_keys()
    print("ready", flush=True)
    for i in range(n):
        if f"k{i:04d}" not in done:
            w.record(*fixed(i))
            time.sleep(0.002)  # as if each were sent: time for the kill to land mid-retry
    w.finish("complete")
    print("finished", flush=True)
    """
)
KILLED_UNITS = 120


def half_failed(i: int) -> tuple[pa.Table, pa.Table]:
    """Unit `i`, failed for every even `i` (many keys to retry: a wide window for the kill)."""
    return fixed(i) if i % 2 else still_failing(i)


def _retry_in_child_and_kill(run_dir: Path, retry: bool, delay: float) -> bool:
    """Resume `run_dir` in a writer process, kill it after `delay` s; True if its finish landed."""
    args = [str(run_dir), str(KILLED_UNITS), "retry" if retry else "plain"]
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])},
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        if proc.stdout.readline().strip() != "ready":
            pytest.fail(f"the writer process did not start: {proc.stderr.read()}")
        time.sleep(delay)
        proc.kill()
        proc.wait()
    # Judged from disk, not from "finished": the kill may land between the finish and the print.
    return _finish_committed(run_dir)


def _finish_committed(run_dir: Path) -> bool:
    """True once a finish is on disk: the manifest says so, or a written `_finalise.json` does."""
    plan = run_dir / FINALISE_FILE
    manifest = (
        orjson.loads(plan.read_bytes())["manifest"] if plan.exists() else read_manifest(run_dir)
    )
    return bool(manifest["status"] == "complete")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_instants_of_a_retry(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    w = create(tmp_path, roll_rows=120)
    record(w, half_failed, range(KILLED_UNITS))
    run = w.finish("complete").path
    for attempt in range(4):
        # The first session decides the retry; later ones resume it, with the flag or without.
        retry = attempt == 0 or rng.random() < 0.5
        if _retry_in_child_and_kill(run, retry, rng.uniform(0.0, 0.3)):
            break
    again = RunWriter.resume(run, suite_hash=SUITE_HASH, retry_failed=True)
    record(again, fixed, range(KILLED_UNITS))
    again.finish("complete")
    assert_rows(run, [fixed(i) for i in range(KILLED_UNITS)])
    assert_counts(run, [fixed(i) for i in range(KILLED_UNITS)])
