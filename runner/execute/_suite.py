"""A suite end to end: where to send (the API or the embedded server), preflight, the run dir."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
from collections.abc import AsyncIterator, Awaitable, Mapping
from pathlib import Path
from typing import TypeVar

import aiohttp
import pyarrow as pa

from runner.api.auth import EnvNames, TokenSource
from runner.api.client import ExploreClient
from runner.api.pacer import Pacer
from runner.api.retry import RetryPolicy
from runner.errors import RunError, RunInterrupted, UsageError
from runner.execute._contract import record_contract
from runner.execute._preflight import Preflight, preflight
from runner.execute._schedule import run_plan
from runner.execute._types import (
    ExecuteOptions,
    ProgressSink,
    RunControl,
    RunResult,
    RunStats,
)
from runner.plan import Plan, expand, parse_shard, shard
from runner.store import RunCounts, RunWriter, find_runs, read_manifest
from runner.suite import Suite, judgments_table, suite_hash
from runner.version import __version__

__all__ = ["make_pacer", "run_suite", "suite_client"]

_T = TypeVar("_T")


async def run_suite(
    suite: Suite,
    *,
    out: Path | str = "reports",
    resume: Path | str | bool = False,
    shard_of: tuple[int, int] | None = None,
    max_requests: int | None = None,
    progress: ProgressSink | None = None,
    control: RunControl | None = None,
    environ: Mapping[str, str] | None = None,
    seed: int | None = None,
    retry_failed: bool = False,
) -> RunResult:
    """Run `suite` into a new run directory under `out` (or resume one) and finish it.

    `resume`: a run directory, or True for the newest unfinished run of this suite under `out`.
    `retry_failed` (with `resume` only): the requests that failed for good are sent again and
    their new rows replace the old; a complete run is taken too (the newest run, with True), and
    one with no failed request is left as it is.
    `shard_of=(k, n)` sends the k-th of n shards at 1/n of the rate limit. A suite without
    `base_url` runs against the embedded local server (the demo dataset, with auth on and the
    demo credentials), started for the run and stopped after it. Otherwise the token comes from
    the suite's `auth` environment variables (a ready token, or an API key and secret to mint
    from). Raises `VlbenchError` for what cannot be run (bad shard, refused preflight, a run
    that cannot be resumed) before anything is written.
    """
    env = os.environ if environ is None else environ
    control = control or RunControl()
    _lean_memory_pool()
    resume_dir = _resume_dir(suite, out, resume, retry_failed)
    if resume_dir is not None:
        shard_of = _resume_shard(resume_dir, shard_of)
        if retry_failed and _nothing_to_retry(resume_dir, suite):
            return _untouched(resume_dir)
    plan = expand(suite)
    if shard_of is not None:
        plan = shard(plan, *shard_of)
    async with suite_client(suite, environ=env, shard_of=shard_of) as client:
        retry = RetryPolicy(
            suite.retries.max_attempts,
            suite.retries.backoff_s,
            suite.retries.max_backoff_s,
            suite.retries.max_retry_after_s,
        )
        checked = preflight(client, plan.specs, retry=retry, rng=random.Random(seed))
        found = await _unless_stopped(checked, control)
        writer = _open_writer(suite, plan, out, resume_dir, client, found, retry_failed)
        max_pages = suite.pagination.max_pages
        options = ExecuteOptions(
            concurrency=suite.concurrency,
            max_pages=None if max_pages == "all" else max_pages,
            retry=retry,
            max_requests=max_requests,
            seed=seed,
        )
        with writer:
            result = await run_plan(
                plan,
                writer,
                client=client,
                options=options,
                control=control,
                progress=progress,
                retried=writer.retried if retry_failed else None,
            )
    if result.status != "failed":
        await asyncio.to_thread(record_contract, result.run_dir)
    return result


def _lean_memory_pool() -> None:
    """Arrow allocates from jemalloc where it is built in, else from the system allocator.

    pyarrow's default here, mimalloc, keeps what it freed: streaming the parts into the final
    files at a run's finish left ~80 MB more resident than jemalloc or malloc do (measured in
    bench/bench_memory.py), which put a 100,000-request run over 400 MB at its end.
    """
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)


@contextlib.asynccontextmanager
async def suite_client(
    suite: Suite,
    *,
    environ: Mapping[str, str] | None = None,
    shard_of: tuple[int, int] | None = None,
) -> AsyncIterator[ExploreClient]:
    """A client for `suite`'s API, as `run_suite` uses it, open for the `async with` block.

        async with suite_client(suite) as client:
            page = await client.search_page(spec.params(), 0)

    Without a `base_url`: the embedded local server (the demo dataset, auth on, the demo
    credentials), started here and stopped on exit; a `dataset_id` other than the demo's is a
    `UsageError`. Otherwise `base_url` and `dataset_id` with the token from the suite's `auth`
    environment variables in `environ` (default `os.environ`). The client has its own session
    (two connections a worker), the suite's timeout and the pacer of `make_pacer`.
    """
    env = os.environ if environ is None else environ
    async with _api(suite, env) as (base_url, dataset_id, auth):
        pacer = make_pacer(suite.rate_limit, shard_of)
        connector = aiohttp.TCPConnector(limit=max(suite.concurrency, 1) * 2)
        async with aiohttp.ClientSession(connector=connector) as session:
            yield ExploreClient(
                base_url,
                dataset_id,
                session=session,
                auth=auth,
                pacer=pacer,
                timeout_s=suite.timeout_s,
            )


def make_pacer(rate_limit: float, shard_of: tuple[int, int] | None = None) -> Pacer | None:
    """The run's pacer: `rate_limit` requests a second, 1/N of it for a shard k/N.

    None (no pacing) for an infinite rate limit.
    """
    rate = rate_limit / (shard_of[1] if shard_of else 1)
    return Pacer(rate) if math.isfinite(rate) else None


async def _unless_stopped(work: Awaitable[_T], control: RunControl) -> _T:
    """Await `work` unless the run is told to stop first (then cancel it, `RunInterrupted`)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(control.stopping.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise RunInterrupted("interrupted before the first search; nothing was written")
    return task.result()


@contextlib.asynccontextmanager
async def _api(suite: Suite, env: Mapping[str, str]) -> AsyncIterator[tuple[str, str, TokenSource]]:
    """Where the run sends its requests: the suite's API, or the embedded server for the run."""
    if suite.base_url is not None:
        names = EnvNames(suite.auth.token_env, suite.auth.api_key_env, suite.auth.api_secret_env)
        auth = TokenSource.from_env(env, names=names)
        yield suite.base_url, suite.dataset_id or "", auth
        return
    from runner.api.auth import DEMO_CREDENTIALS
    from runner.server.config import ServerConfig
    from runner.server.lifecycle import ServerThread

    server = ServerThread(ServerConfig("demo", credentials=DEMO_CREDENTIALS))
    await asyncio.to_thread(server.start)
    served = server.dataset_id
    if suite.dataset_id not in (None, served):
        await asyncio.to_thread(server.stop)
        raise UsageError(
            f"dataset_id {suite.dataset_id!r}: the embedded server serves only the demo dataset "
            f"({served!r}); give a base_url to reach another"
        )
    try:
        yield server.base_url, server.dataset_id, TokenSource(credentials=DEMO_CREDENTIALS)
    finally:
        await asyncio.to_thread(server.stop)


def _resume_dir(
    suite: Suite, out: Path | str, resume: Path | str | bool, retry_failed: bool
) -> Path | None:
    if resume is False:
        if retry_failed:
            raise UsageError(
                "--retry-failed: only with --resume (it sends a run's failed requests)"
            )
        return None
    if resume is not True:
        return Path(resume)
    runs = find_runs(out, suite.name) if Path(out).is_dir() else []
    if not runs:
        raise RunError(f"{out}: no run of suite {suite.name!r} to resume")
    newest = runs[-1]
    if read_manifest(newest)["status"] == "complete" and not retry_failed:
        raise RunError(f"{newest}: the newest run of suite {suite.name!r} is complete already")
    return newest


def _nothing_to_retry(run_dir: Path, suite: Suite) -> bool:
    """A complete run of `suite` counting no failed request: a retry leaves it as it is.

    (A run of another suite is refused by `RunWriter.resume`, with the reason.)
    """
    manifest = read_manifest(run_dir)
    counts = RunCounts.from_dict(manifest["counts"], where=run_dir)
    ours = manifest["suite_hash"] == suite_hash(suite)
    return ours and manifest["status"] == "complete" and counts.requests_failed == 0


def _untouched(run_dir: Path) -> RunResult:
    counts = RunCounts.from_dict(read_manifest(run_dir)["counts"], where=run_dir)
    return RunResult(run_dir, "complete", counts, RunStats(retried=0), touched=False)


def _resume_shard(run_dir: Path, asked: tuple[int, int] | None) -> tuple[int, int] | None:
    label = read_manifest(run_dir).get("shard")
    was = parse_shard(label) if isinstance(label, str) else None
    if asked is not None and asked != was:
        said = f"shard {label}" if was else "no shard"
        raise UsageError(f"{run_dir}: the run was started with {said}; resume it the same way")
    return was


def _open_writer(
    suite: Suite,
    plan: Plan,
    out: Path | str,
    resume_dir: Path | None,
    client: ExploreClient,
    found: Preflight,
    retry_failed: bool,
) -> RunWriter:
    digest = suite_hash(suite)
    if resume_dir is not None:
        return RunWriter.resume(
            resume_dir,
            suite_hash=digest,
            requests_planned=len(plan.specs),
            retry_failed=retry_failed,
        )
    return RunWriter.create(
        out,
        suite_name=suite.name,
        suite_hash=digest,
        base_url=client.base_url,
        dataset_id=client.dataset_id,
        tool_version=__version__,
        requests_planned=len(plan.specs),
        modes={name: mode.model_dump(mode="json") for name, mode in suite.modes.items()},
        sweep=suite.sweep.model_dump(mode="json"),
        fusions=[f.model_dump(mode="json") for f in suite.fusions],
        shard=plan.shard_label,
        judgments=judgments_table(suite),
        dataset_status=found.dataset.status,
        dataset_caveat=found.dataset.caveat,
    )
