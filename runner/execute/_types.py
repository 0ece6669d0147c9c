"""The scheduler's records: options, retry policy, live counters, the result, and controls."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import pyarrow as pa

from runner.api.retry import RetryPolicy
from runner.errors import RunInterrupted
from runner.store import RunCounts
from runner.suite.fields import MAX_PAGES

__all__ = [
    "EXIT_INTERRUPTED",
    "PAGE_CAP",
    "PAGE_SIZE",
    "ExecuteOptions",
    "ProgressSink",
    "RetryPolicy",
    "RunControl",
    "RunInterrupted",
    "RunResult",
    "RunSink",
    "RunStats",
]

PAGE_SIZE: Final = 100
# The most pages one request may fetch, whatever the suite says: 100k clusters, then stop.
# The suite refuses a max_pages above it, so the number lives with the suite's checks.
PAGE_CAP: Final = MAX_PAGES
EXIT_INTERRUPTED: Final = 130


@dataclass(frozen=True, slots=True)
class ExecuteOptions:
    """How the scheduler runs a plan (the suite's `concurrency`, `pagination`, `retries`)."""

    concurrency: int = 8
    max_pages: int | None = 1  # None: all pages (up to PAGE_CAP)
    retry: RetryPolicy = RetryPolicy()
    max_requests: int | None = None  # send at most this many wire requests, then stop
    seed: int | None = None  # for the jitter; None: unpredictable
    # After a stop (Ctrl-C, SIGTERM), units in flight get this long to complete before they are
    # cancelled: any run, whatever it waits for, ends within about this long.
    stop_grace_s: float = 0.5


class RunControl:
    """Stops a run from outside (a signal handler): `stop()` gracefully, `abort()` at once."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.aborting = asyncio.Event()
        self.reason: str | None = None

    def stop(self, reason: str = "interrupted") -> None:
        """Take no new work; give requests in flight a short grace; a second call aborts."""
        if self.stopping.is_set():
            self.abort(reason)
            return
        self.reason = reason
        self.stopping.set()

    def abort(self, reason: str = "interrupted") -> None:
        """Cancel requests in flight too."""
        self.reason = self.reason or reason
        self.stopping.set()
        self.aborting.set()


@dataclass(slots=True)
class RunStats:
    """Live counters of this session of a run (what progress shows)."""

    total: int = 0  # wire requests (units) planned
    skipped: int = 0  # units already done before this session (resume)
    done: int = 0  # units recorded this session
    failed: int = 0  # of them, with a failed page
    pages: int = 0
    hits: int = 0
    sent: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    retry_after_capped: int = 0  # Retry-After answers that asked for more than the cap
    retried: int | None = None  # failed requests sent again (--retry-failed; None: not asked)
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """HTTP requests sent per second so far."""
        elapsed = self.elapsed_s
        return self.sent / elapsed if elapsed > 0 else 0.0


class RunSink(Protocol):
    """What the scheduler needs of the run it writes (`runner.store.RunWriter` is one)."""

    @property
    def run_dir(self) -> Path: ...

    @property
    def counts(self) -> RunCounts: ...

    def completed_keys(self) -> set[str]: ...

    def record(self, request_rows: pa.RecordBatch, hit_rows: pa.RecordBatch) -> None: ...

    def finish(self, status: str) -> object: ...


class ProgressSink(Protocol):
    """What the scheduler tells a progress display (see `runner.execute.progress`)."""

    def update(self, stats: RunStats) -> None: ...


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended.

    `status` is the manifest's (complete / partial / failed); `counts` are the run's, over all
    its sessions; `stats` this session's. Exit code: 0 complete (or stopped at --max-requests)
    with no failure, 1 some request failed for good or the run failed, 130 interrupted.
    """

    run_dir: Path
    status: str
    counts: RunCounts
    stats: RunStats
    message: str | None = None
    interrupted: bool = False
    touched: bool = True  # False: the run was left as it was (a retry with nothing to retry)

    @property
    def exit_code(self) -> int:
        if self.status == "failed" or self.counts.requests_failed:
            return 1
        if self.interrupted:
            return EXIT_INTERRUPTED
        return 0
