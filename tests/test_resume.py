"""Resuming runs: completed keys are skipped; a crash at any instant loses or duplicates nothing."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import polars as pl
import polars.testing
import pyarrow as pa
import pytest

from runner.errors import RunError
from runner.schema import HITS_FILE, REQUESTS_FILE
from runner.store import (
    RunWriter,
    _files,
    _writer,
    open_run,
    read_manifest,
    scan_hits,
    scan_requests,
)
from runner.store._layout import FINALISE_FILE, JOURNAL_DIR, PARTS_DIR
from runner.store.synthetic import synthetic_unit

SUITE_HASH = "sha256:suite"
REPO = Path(__file__).resolve().parents[1]


class Crash(BaseException):
    """Stands for the process dying at this instant (nothing after it runs)."""


def unit(i: int) -> tuple[pa.Table, pa.Table]:
    """Unit `i` of the test suite: varied pages, hits (some none) and outcomes."""
    return synthetic_unit(
        f"k{i:04d}",
        query_id=f"q{i % 7}",
        pages=1 + i % 3,
        hits_per_page=(i % 5) * 3,
        outcome="timeout" if i % 11 == 0 else "ok",
    )


def create(root: Path, **overrides: Any) -> RunWriter:
    args: dict[str, Any] = {
        "suite_name": "demo",
        "suite_hash": SUITE_HASH,
        "base_url": "http://127.0.0.1:8000",
        "dataset_id": "ds",
        "tool_version": "0.1.0",
        "requests_planned": 100,
    }
    args.update(overrides)
    return RunWriter.create(root, **args)


def die(writer: RunWriter) -> None:
    """What the kernel does for a killed writer: close its files (and so release its lock)."""
    writer._release()


def crash_finish_before_hits(w: RunWriter, status: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`w.finish(status)` dies after renaming requests.parquet, before hits.parquet; `w` is
    left as a killed process leaves it (its lock released, nothing else done)."""
    real_replace = os.replace

    def dies_before_hits(src: Any, dst: Any) -> None:
        if Path(dst).name == HITS_FILE:
            raise Crash()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_before_hits)
    with pytest.raises(Crash):
        w.finish(status)
    monkeypatch.undo()
    die(w)


def record_all(writer: RunWriter, units: range) -> None:
    done = writer.completed_keys()
    for i in units:
        if f"k{i:04d}" not in done:
            writer.record(*unit(i))


def assert_exactly_units(run: Path, units: range) -> None:
    """The run holds each unit's rows once, in rank order: no loss, no duplicate."""
    expected = [unit(i) for i in units]
    want_requests = pl.from_arrow(pa.concat_tables([r for r, _ in expected]))
    want_hits = pl.from_arrow(pa.concat_tables([h for _, h in expected]))
    assert isinstance(want_requests, pl.DataFrame) and isinstance(want_hits, pl.DataFrame)
    got_requests = scan_requests(run).collect()
    got_hits = scan_hits(run).collect()
    polars.testing.assert_frame_equal(
        got_requests.sort("request_key", "page"), want_requests.sort("request_key", "page")
    )
    polars.testing.assert_frame_equal(
        got_hits.sort("request_key", "rank"), want_hits.sort("request_key", "rank")
    )
    for (key,), group in got_hits.group_by("request_key", maintain_order=True):
        assert group["rank"].to_list() == sorted(group["rank"].to_list()), key
    counts = open_run(run).counts
    assert counts.requests_done == len(units)
    assert counts.requests_failed == sum(1 for i in units if i % 11 == 0)
    assert counts.pages == want_requests.height and counts.hits == want_hits.height


# -- resume ------------------------------------------------------------------------------------


def test_resumed_run_ends_with_the_rows_of_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = create(tmp_path / "a", roll_rows=40)
    record_all(straight, range(30))
    straight_run = straight.finish("complete").path

    first = create(tmp_path / "b", roll_rows=40)
    record_all(first, range(12))
    assert first.finish("partial").status == "partial"
    again = RunWriter.resume(first.run_dir, suite_hash=SUITE_HASH)
    assert again.completed_keys() == {f"k{i:04d}" for i in range(12)}
    assert again.counts == open_run(first.run_dir, allow_running=True).counts
    live = scan_hits(again.run_dir, allow_running=True).collect()  # the earlier rows, while running
    assert live.height == sum(unit(i)[1].num_rows for i in range(12))
    record_all(again, range(30))
    resumed_run = again.finish("complete").path

    assert_exactly_units(resumed_run, range(30))
    for scan in (scan_requests, scan_hits):
        polars.testing.assert_frame_equal(
            scan(resumed_run).collect().sort(pl.all()), scan(straight_run).collect().sort(pl.all())
        )
    manifest = read_manifest(resumed_run)
    assert len(manifest["resumed_at"]) == 1 and manifest["status"] == "complete"


def test_resume_can_update_the_plan_size(tmp_path: Path) -> None:
    w = create(tmp_path)
    w.finish("failed")
    again = RunWriter.resume(w.run_dir, suite_hash=SUITE_HASH, requests_planned=7)
    assert read_manifest(w.run_dir)["status"] == "running"
    assert again.finish("complete").counts.requests_planned == 7


def test_resume_refuses_a_complete_run(tmp_path: Path) -> None:
    run = create(tmp_path).finish("complete").path
    with pytest.raises(RunError, match="run is complete") as caught:
        RunWriter.resume(run, suite_hash=SUITE_HASH)
    assert str(run) in str(caught.value)
    assert not (run / JOURNAL_DIR).exists()  # refused before touching anything


def test_resume_refuses_a_run_of_another_suite(tmp_path: Path) -> None:
    run = create(tmp_path).finish("partial").path
    with pytest.raises(RunError, match="different suite .*sha256:suite.*sha256:other"):
        RunWriter.resume(run, suite_hash="sha256:other")
    assert read_manifest(run)["status"] == "partial"


def test_resume_refuses_a_run_another_writer_holds(tmp_path: Path) -> None:
    w = create(tmp_path)
    with pytest.raises(RunError, match="being written by another process"):
        RunWriter.resume(w.run_dir, suite_hash=SUITE_HASH)
    w.record(*unit(1))  # the holder is unharmed
    w.finish("complete")


def test_resume_refuses_an_unknown_run(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such run directory"):
        RunWriter.resume(tmp_path / "nope", suite_hash=SUITE_HASH)


# -- crashes at chosen instants ------------------------------------------------------------------


@pytest.mark.parametrize("fsync_units", [False, True])
def test_killed_run_resumes_from_parts_and_journal(tmp_path: Path, fsync_units: bool) -> None:
    w = create(tmp_path, roll_rows=30, fsync_units=fsync_units)
    record_all(w, range(21))
    assert any((w.run_dir / PARTS_DIR).iterdir()) and w.buffered_rows > 0
    die(w)
    again = RunWriter.resume(w.run_dir, suite_hash=SUITE_HASH)
    assert again.recovery.torn_bytes == 0 and again.recovery.units_replayed > 0
    assert again.completed_keys() == {f"k{i:04d}" for i in range(21)}
    record_all(again, range(25))
    assert_exactly_units(again.finish("complete").path, range(25))


def _journal_segment(run: Path) -> Path:
    (segment,) = (run / JOURNAL_DIR).glob("*.vlj")
    return segment


@pytest.mark.parametrize(
    "tear, lost_last",
    [
        pytest.param(lambda data, last: data[: len(data) - last // 2], True, id="cut-mid-frame"),
        pytest.param(lambda data, last: data[: len(data) - last + 7], True, id="cut-in-header"),
        pytest.param(
            lambda data, last: data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:], True, id="bit-rot"
        ),
        pytest.param(lambda data, last: data + b"\x00" * 4096, False, id="zero-tail"),
        pytest.param(lambda data, last: data + b"VLJ1garbage", False, id="garbage-tail"),
    ],
)
def test_a_torn_journal_tail_loses_only_the_torn_unit(
    tmp_path: Path, tear: Any, lost_last: bool
) -> None:
    w = create(tmp_path)
    record_all(w, range(5))
    segment = _journal_segment(w.run_dir)
    before_last = segment.stat().st_size
    w.record(*unit(5))
    last = segment.stat().st_size - before_last
    die(w)
    data = segment.read_bytes()
    torn = tear(data, last)
    segment.write_bytes(torn)

    again = RunWriter.resume(w.run_dir, suite_hash=SUITE_HASH)
    survivors = range(5) if lost_last else range(6)
    assert again.completed_keys() == {f"k{i:04d}" for i in survivors}
    good_end = before_last if lost_last else len(data)
    assert again.recovery.torn_bytes == len(torn) - good_end
    record_all(again, range(8))
    assert_exactly_units(again.finish("complete").path, range(8))


def test_crash_between_the_two_renames_of_a_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _files.write_parquet_atomic

    def dies_before_hits_part(path: Path, *args: Any, **kwargs: Any) -> None:
        if path.name.endswith("-hits.parquet"):
            raise Crash()
        real(path, *args, **kwargs)

    w = create(tmp_path, roll_rows=30)
    monkeypatch.setattr(_files, "write_parquet_atomic", dies_before_hits_part)
    with pytest.raises(Crash):
        record_all(w, range(20))
    monkeypatch.undo()
    die(w)
    assert [p.name for p in (w.run_dir / PARTS_DIR).iterdir()] == ["00000000-requests.parquet"]
    again = RunWriter.resume(w.run_dir, suite_hash=SUITE_HASH)
    recorded = len(again.completed_keys())
    assert again.recovery.units_replayed == recorded > 0
    record_all(again, range(20))
    assert_exactly_units(again.finish("complete").path, range(20))


@pytest.mark.parametrize("status", ["partial", "complete"])
def test_crash_after_finish_decided_is_rolled_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    w = create(tmp_path, roll_rows=30)
    record_all(w, range(10))
    monkeypatch.setattr(_files, "roll_forward", lambda run_dir: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        w.finish(status)
    monkeypatch.undo()
    die(w)
    assert (w.run_dir / FINALISE_FILE).exists()
    assert read_manifest(w.run_dir)["status"] == "running"
    if status == "complete":
        with pytest.raises(RunError, match="run is complete"):
            RunWriter.resume(w.run_dir, suite_hash=SUITE_HASH)
        assert_exactly_units(w.run_dir, range(10))
        return
    again = RunWriter.resume(w.run_dir, suite_hash=SUITE_HASH)
    assert again.recovery.rolled_forward
    record_all(again, range(15))
    assert_exactly_units(again.finish("complete").path, range(15))


def test_crash_while_finish_writes_the_rows_in_memory_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run too short to roll a part: finish writes its rows straight from memory into the
    # final files. Until it has decided (`_finalise.json`), they must come back from the journal.
    w = create(tmp_path)
    record_all(w, range(10))
    assert w.buffered_rows > 0 and not list((w.run_dir / PARTS_DIR).iterdir())

    def dies(path: Path, data: bytes) -> None:
        raise Crash()

    monkeypatch.setattr(_writer, "atomic_write_bytes", dies)
    with pytest.raises(Crash):
        w.finish("complete")
    monkeypatch.undo()
    die(w)
    assert not (w.run_dir / FINALISE_FILE).exists()
    again = RunWriter.resume(w.run_dir, suite_hash=SUITE_HASH)
    assert again.recovery.units_replayed == 10 and not again.recovery.rolled_forward
    assert again.completed_keys() == {f"k{i:04d}" for i in range(10)}
    assert not [p for p in w.run_dir.rglob("*") if ".tmp-" in p.name]
    assert_exactly_units(again.finish("complete").path, range(10))


def test_crash_between_the_renames_of_the_final_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = create(tmp_path, roll_rows=30)
    record_all(first, range(6))
    first.finish("partial")  # old final files exist: a half-done rename must not mix them
    w = RunWriter.resume(first.run_dir, suite_hash=SUITE_HASH, roll_rows=30)
    record_all(w, range(12))
    crash_finish_before_hits(w, "partial", monkeypatch)
    assert (w.run_dir / REQUESTS_FILE).exists() and (w.run_dir / FINALISE_FILE).exists()
    again = RunWriter.resume(w.run_dir, suite_hash=SUITE_HASH)
    assert again.recovery.rolled_forward
    assert again.completed_keys() == {f"k{i:04d}" for i in range(12)}
    record_all(again, range(14))
    assert_exactly_units(again.finish("complete").path, range(14))


# -- SIGKILL at random instants ------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from tests.test_resume import SUITE_HASH, create, unit
    from runner.store import RunWriter

    root, run_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if run_dir == "-":
        w = create(root, roll_rows=120)
    else:
        w = RunWriter.resume(run_dir, suite_hash=SUITE_HASH, roll_rows=120)
    done = w.completed_keys()
    print("ready", w.run_dir, flush=True)
    for i in range(n):
        key = f"k{i:04d}"
        if key not in done:
            print("start", key, flush=True)
            w.record(*unit(i))
            print("done", key, flush=True)
    w.finish("partial")
    print("finished", flush=True)
    """
)

UNITS = 160


def _run_child_and_kill(root: Path, run_dir: Path | None, delay: float) -> tuple[Path, list[str]]:
    """Start a writer process, SIGKILL it `delay` s after it is ready; its whole output lines."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(run_dir or "-"), str(UNITS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        ready = proc.stdout.readline().split()
        if ready[:1] != ["ready"]:
            pytest.fail(f"the writer process did not start: {proc.stderr.read()}")
        time.sleep(delay)
        proc.kill()
        # The kill may cut the last line short ("done" without its key): whole lines only.
        return Path(ready[1]), proc.stdout.read().split("\n")[:-1]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_instants_loses_only_the_unit_in_flight(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    run_dir: Path | None = None
    acked: set[str] = set()
    for _ in range(3):
        run_dir, lines = _run_child_and_kill(tmp_path, run_dir, rng.uniform(0.0, 0.25))
        acked |= {line.split()[1] for line in lines if line.startswith("done")}
        started = [line.split()[1] for line in lines if line.startswith("start")]
        in_flight = {started[-1]} - acked if started else set()
        if lines and lines[-1] == "finished":
            break
        writer = RunWriter.resume(run_dir, suite_hash=SUITE_HASH)
        completed = writer.completed_keys()
        assert acked <= completed <= acked | in_flight
        acked = completed  # an in-flight unit that made it is recorded: it counts from now on
        die(writer)  # leave the repaired run to the next process
    assert run_dir is not None
    final = RunWriter.resume(run_dir, suite_hash=SUITE_HASH)
    assert acked <= final.completed_keys()
    record_all(final, range(UNITS))
    assert_exactly_units(final.finish("complete").path, range(UNITS))
