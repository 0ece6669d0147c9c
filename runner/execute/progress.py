"""How a run shows its progress: a live bar on a terminal, plain lines in CI, nothing when quiet.

    with make_progress(quiet=False) as progress:
        await run_plan(plan, writer, client=client, progress=progress)

The display sees only counters (`RunStats`): requests done of the total, hits, requests that
failed, HTTP requests a second and the time left. Nothing it prints can hold a token or a secret.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from runner.execute import RunStats

__all__ = ["LineProgress", "LiveProgress", "NullProgress", "describe", "make_progress"]


def describe(stats: RunStats) -> str:
    """One line: `120/400 requests (30%), 5321 hits, 2 failed, 9.9 req/s, ETA 28 s`."""
    done = stats.skipped + stats.done
    share = f" ({100 * done / stats.total:.0f}%)" if stats.total else ""
    parts = [
        f"{done}/{stats.total} requests{share}",
        *([f"retrying {stats.retried} failed"] if stats.retried else []),
        f"{stats.hits} hits",
        f"{stats.failed} failed",
        f"{stats.rate:.1f} req/s",
    ]
    eta = _eta(stats)
    if eta is not None:
        parts.append(f"ETA {_duration(eta)}")
    return ", ".join(parts)


def _eta(stats: RunStats) -> float | None:
    left = stats.total - stats.skipped - stats.done
    if left <= 0:
        return 0.0
    if stats.done == 0:
        return None
    return left * stats.elapsed_s / stats.done


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class NullProgress:
    """Shows nothing (`--quiet`)."""

    def update(self, stats: RunStats) -> None:
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class LineProgress(NullProgress):
    """A plain line every `interval_s` (and a last one at the end), for logs and CI."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._interval = interval_s
        self._clock = clock
        self._last_at: float | None = None
        self._last: RunStats | None = None
        self._printed = ""

    def update(self, stats: RunStats) -> None:
        self._last = stats
        now = self._clock()
        if self._last_at is None or now - self._last_at >= self._interval:
            self._last_at = now
            self._print(stats)

    def _print(self, stats: RunStats) -> None:
        line = describe(stats)
        if line != self._printed:
            self._printed = line
            print(f"progress: {line}", file=self._stream, flush=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._last is not None:
            self._print(self._last)


class LiveProgress(NullProgress):
    """A rich live bar on a terminal: done/total, hits, failed, req/s, ETA."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[hits]} hits, {task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]:.1f} req/s"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def update(self, stats: RunStats) -> None:
        done = stats.skipped + stats.done
        if self._task is None:
            retrying = f" (retrying {stats.retried} failed)" if stats.retried else ""
            self._task = self._progress.add_task(
                f"requests{retrying}", total=stats.total, hits=0, failed=0, rate=0.0
            )
        self._progress.update(
            self._task,
            completed=done,
            total=stats.total,
            hits=stats.hits,
            failed=stats.failed,
            rate=stats.rate,
        )

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()


def make_progress(
    *, quiet: bool = False, stream: TextIO | None = None, interval_s: float = 10.0
) -> NullProgress:
    """The display for where output goes: nothing, a live bar (a terminal) or plain lines."""
    if quiet:
        return NullProgress()
    out = sys.stderr if stream is None else stream
    if out.isatty():
        return LiveProgress(Console(file=out))
    return LineProgress(out, interval_s=interval_s)
