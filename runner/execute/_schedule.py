"""The scheduler: workers over the plan's wire requests, pages with retries, the run's end."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field

from runner.api.client import ExploreClient, SendTiming
from runner.api.retry import classify, wait_before_retry
from runner.errors import (
    ApiError,
    FatalFailure,
    RunError,
    TransportError,
    UnitDropped,
    VlbenchError,
)
from runner.execute import _types
from runner.execute._rows import Fetched, Recorder
from runner.execute._types import (
    PAGE_SIZE,
    ExecuteOptions,
    ProgressSink,
    RunControl,
    RunResult,
    RunSink,
    RunStats,
)
from runner.plan import Plan, RequestSpec

__all__ = ["run_plan", "wire_units"]


@dataclass(slots=True)
class _Refusal:
    """A mode the API refused with 403: its first error, and how many requests it failed."""

    error: str
    requests: int = 0


@dataclass(slots=True)
class _Runner:
    client: ExploreClient
    options: ExecuteOptions
    control: RunControl
    stats: RunStats
    rng: random.Random
    refused: dict[str, _Refusal] = field(default_factory=dict)

    async def fetch(self, params: dict[str, str], page_number: int, key: str) -> Fetched:
        """One page with its retries; a stop during a backoff drops the unit."""
        retry = self.options.retry
        timing = SendTiming()
        notes: list[str] = []  # a Retry-After cut to the cap: said in the row's error text
        for attempt in itertools.count(1):
            self.stats.sent += 1
            try:
                page = await self.client.search_page(
                    params, page_number, request_key=key, timing=timing
                )
            except (ApiError, TransportError) as exc:
                verdict = classify(exc)
                if verdict.fatal:
                    raise FatalFailure(exc) from None
                if not verdict.retryable or attempt >= retry.max_attempts:
                    return Fetched(
                        page_number,
                        None,
                        verdict.outcome,
                        verdict.status,
                        attempt,
                        timing.sent_at,
                        timing.latency_s * 1000,
                        "; ".join([str(exc), *notes]),
                    )
                note = retry.capped_note(verdict.retry_after)
                if note is not None and note not in notes:
                    notes.append(note)
                self.stats.retry_after_capped += note is not None
                self.stats.retries += 1
                wait = wait_before_retry(verdict, attempt, retry, self.rng, self.client.pacer)
                if await self._stopped_within(wait):
                    raise UnitDropped from None
                continue
            error = "; ".join(notes) or None
            return Fetched(
                page_number,
                page,
                "ok",
                200,
                attempt,
                timing.sent_at,
                timing.latency_s * 1000,
                error,
            )
        raise AssertionError("unreachable")

    async def _stopped_within(self, seconds: float) -> bool:
        """Sleep `seconds` unless the run is told to stop first; True if it was."""
        if self.control.stopping.is_set():
            return True
        if seconds <= 0:
            return False
        try:
            await asyncio.wait_for(self.control.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def unit(self, specs: Sequence[RequestSpec]) -> list[Fetched]:
        """Every page of one wire request, up to the first final failure."""
        lead = specs[0]
        refusal = self.refused.get(lead.mode)
        if refusal is not None:
            return [_not_sent(lead.mode, refusal)]
        params = dict(lead.params())
        limit = (
            _types.PAGE_CAP
            if self.options.max_pages is None
            else min(self.options.max_pages, _types.PAGE_CAP)
        )
        pages: list[Fetched] = []
        for number in range(limit):
            fetched = await self.fetch(params, number, lead.key)
            pages.append(fetched)
            if fetched.status == 403:
                self._refuse(lead.mode, fetched)
            if _last_page(fetched, number, limit):
                return pages
            if self.control.stopping.is_set():
                raise UnitDropped
        return pages

    def _refuse(self, mode: str, fetched: Fetched) -> None:
        """A 403: this mode's later requests are failed without being sent."""
        refusal = self.refused.setdefault(mode, _Refusal(fetched.error or "HTTP 403"))
        refusal.requests += 1


def _not_sent(mode: str, refusal: _Refusal) -> Fetched:
    """The failed page of a request of a mode the API refused earlier in the run (403)."""
    refusal.requests += 1
    error = f"not sent: the API refused mode {mode} earlier in this run ({refusal.error})"
    return Fetched(0, None, "http_error", 403, 0, time.time(), 0.0, error)


def _refusal_lines(refused: dict[str, _Refusal]) -> list[str]:
    return [
        f"mode {mode}: {r.requests} request(s) failed, refused by the API: {r.error}"
        for mode, r in sorted(refused.items())
    ]


def _last_page(fetched: Fetched, number: int, limit: int) -> bool:
    page = fetched.page
    if page is None or number + 1 >= limit:
        return True
    n = page.n_clusters
    if n == 0 or n < PAGE_SIZE:
        return True
    return page.total_pages is not None and number + 1 >= page.total_pages


def wire_units(plan: Plan, done: Set[str]) -> Iterator[tuple[RequestSpec, ...]]:
    """The plan's wire requests, each as the specs it answers, without the keys already done.

    Lazy: a plan of 100,000 requests is read one unit at a time, never held as objects.
    """
    for request in plan.requests:
        specs = tuple(spec for spec in request.specs if spec.key not in done)
        if specs:
            yield specs


async def run_plan(
    plan: Plan,
    writer: RunSink,
    *,
    client: ExploreClient,
    options: ExecuteOptions | None = None,
    control: RunControl | None = None,
    progress: ProgressSink | None = None,
    retried: int | None = None,
) -> RunResult:
    """Send every request of `plan` not yet in `writer`'s run, record each, finish the run.

    `retried`: how many failed requests the writer withdrew to send again (`--retry-failed`).

    The writer is finished `complete` when every planned request is recorded, `partial` when
    the run was stopped (or cut by `max_requests`), `failed` when the API refused the
    credentials. Errors of the store (`RunError`) end the run `failed` and are raised.
    """
    control = control or RunControl()
    options = options or ExecuteOptions()
    rng = random.Random(options.seed)
    done = writer.completed_keys()
    remaining = sum(1 for _ in wire_units(plan, done)) if done else len(plan.requests)
    stats = RunStats(
        total=len(plan.requests), skipped=len(plan.requests) - remaining, retried=retried
    )
    if progress is not None and retried:
        progress.update(stats)  # say at once that failed requests are being sent again
    runner = _Runner(client, options, control, stats, rng)
    recorder = Recorder(writer)
    queue = itertools.islice(wire_units(plan, done), options.max_requests)
    fatal: list[VlbenchError] = []

    async def worker() -> None:
        for unit in queue:
            if control.stopping.is_set():
                return
            try:
                pages = await runner.unit(unit)
            except UnitDropped:
                return
            except FatalFailure as exc:
                fatal.append(exc.error)
                control.stop("the API refused the credentials")
                return
            stats.hits += recorder.add(unit, pages)
            stats.done += 1
            stats.pages += len(pages)
            if any(p.outcome != "ok" for p in pages):
                stats.failed += 1
            if progress is not None:
                progress.update(stats)
            if recorder.ready():
                await recorder.flush_in_thread()  # the loop paces on while the store writes

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, options.concurrency))]
    aborter = asyncio.create_task(_cancel_after_stop(control, tasks, options.stop_grace_s))
    flusher = asyncio.create_task(recorder.flush_when_due())
    try:
        results: list[BaseException | None] = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        aborter.cancel()
        flusher.cancel()
        for task in tasks:
            task.cancel()
    if flusher.done() and not flusher.cancelled() and flusher.exception() is not None:
        results.append(flusher.exception())
    late = await recorder.drain()  # a record still running in a thread finishes first
    if late is not None and not any(r is late for r in results):
        results.append(late)
    errors = [r for r in results if isinstance(r, BaseException)]
    if not any(isinstance(e, RunError) for e in errors):
        try:
            recorder.flush()  # units completed before the end (or a stop) are kept
        except RunError as exc:
            errors.append(exc)
    store_errors = [e for e in errors if isinstance(e, RunError)]
    if store_errors:
        writer.finish("failed")
        raise store_errors[0]
    unexpected = [e for e in errors if not isinstance(e, asyncio.CancelledError)]
    if unexpected:
        writer.finish("failed")
        raise unexpected[0]
    if progress is not None:
        progress.update(stats)
    return _finish(writer, stats, control, fatal, _refusal_lines(runner.refused))


async def _cancel_after_stop(
    control: RunControl, tasks: Sequence[asyncio.Task[None]], grace_s: float
) -> None:
    """After a stop, give units in flight `grace_s` to complete, then cancel them (abort: at once).

    Whatever a worker waits for (the pacer held by a long Retry-After, a backoff, a slow answer),
    the run ends within the grace; a cancelled unit is not recorded and a resume redoes it.
    """
    await control.stopping.wait()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(control.aborting.wait(), timeout=grace_s)
    for task in tasks:
        task.cancel()


def _finish(
    writer: RunSink,
    stats: RunStats,
    control: RunControl,
    fatal: Sequence[VlbenchError],
    refusals: Sequence[str] = (),
) -> RunResult:
    counts = writer.counts
    everything = counts.requests_done >= counts.requests_planned
    if fatal:
        status, message = "failed", f"stopped: {fatal[0]}"
    elif everything and refusals:
        # Every request is recorded, but whole modes were refused: not a complete run.
        status, message = "partial", "\n".join(refusals)
    elif everything:
        status, message = "complete", None
    else:
        status = "partial"
        message = f"stopped: {control.reason}" if control.reason else "stopped at --max-requests"
        message = "\n".join([message, *refusals])
    writer.finish(status)
    return RunResult(
        run_dir=writer.run_dir,
        status=status,
        counts=writer.counts,
        stats=stats,
        message=message,
        interrupted=control.reason == "interrupted" and not everything,
    )
