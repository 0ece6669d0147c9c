"""Progress: a live bar on a terminal, plain lines otherwise, nothing when quiet."""

from __future__ import annotations

import io
import re
import time

import pytest

from runner.execute import RunStats
from runner.execute.progress import (
    LineProgress,
    LiveProgress,
    NullProgress,
    describe,
    make_progress,
)


def stats(**values: int) -> RunStats:
    run = RunStats(**values)
    run.started = time.monotonic() - 10.0  # ten seconds in
    return run


def test_describe_counts_rate_and_eta() -> None:
    line = describe(stats(total=10, skipped=2, done=3, hits=57, failed=1, sent=20))
    assert line.startswith("5/10 requests (50%), 57 hits, 1 failed, ")
    rate = float(re.search(r"([\d.]+) req/s", line).group(1))  # type: ignore[union-attr]
    assert rate == pytest.approx(20 / 10, rel=0.05)
    eta = float(re.search(r"ETA (\d+) s", line).group(1))  # type: ignore[union-attr]
    assert eta == pytest.approx(5 * 10 / 3, abs=1)  # 5 left at 10 s per 3 done


def test_describe_has_no_eta_before_the_first_request() -> None:
    assert "ETA" not in describe(stats(total=4))


def test_lines_are_periodic_and_end_with_the_last_state() -> None:
    out = io.StringIO()
    now = [0.0]
    run = stats(total=3)
    with LineProgress(out, interval_s=10, clock=lambda: now[0]) as progress:
        for done in (1, 2, 3):
            run.done = done
            now[0] += 4  # updates at 4, 8, 12 s: the first prints, the others are too soon
            progress.update(run)
    lines = out.getvalue().splitlines()  # ... and leaving prints the last state
    assert [line.split(" requests")[0] for line in lines] == ["progress: 1/3", "progress: 3/3"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_make_progress_picks_by_where_output_goes() -> None:
    assert type(make_progress(quiet=True, stream=Terminal())) is NullProgress
    assert type(make_progress(stream=io.StringIO())) is LineProgress
    terminal = Terminal()
    live = make_progress(stream=terminal)
    assert type(live) is LiveProgress
    with live:
        live.update(stats(total=4, done=1, hits=9))
    assert "1/4" in terminal.getvalue() and "9 hits" in terminal.getvalue()
