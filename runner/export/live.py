"""Every match of each query of a suite, through the API's own export job, not page by page.

    result = await live_export(load_suite("queries/demo.yaml"), "ids.csv", fmt="csv", verify=True)

For each unique wire request of the suite (query text × mode × setting):
- VQL modes (fts, semantic) drive the API's export job (`runner.export.jobs`: start, poll, the
  ZIP's metadata) with the request's VQL and entity_type, `export_format=parquet` and a
  `file_name`; the job's rows are the request's IDs.
- Caption mode has no VQL, so it has no export job: its requests are paged through in full
  (`max_pages: all`), by the run executor (`runner.execute.run_plan`: the same pacing, retries
  and pagination as `vlbench run`).
- Where the job is not available (the start answers 404 / 405 / 501) or ends without IDs to give
  (REJECTED, e.g. too many entities; CANCELED / CANCELLED; a 200 carrying "error") the request
  falls back to full pagination, and the outcome records why (the job's message).
  With `fallback=False` (`--no-fallback`) these are errors instead, like FAILED.
- A job that FAILED is an error (`ExportError` naming the query, the job and its
  `result_message`): nothing is written. So is a job still unfinished after `max_wait_s`, and a
  request whose full pagination failed.
With `verify`, the VQL requests are ALSO paged through in full, and each outcome records the
difference between the export job's ID set and pagination's (counts and a few examples); the
sidecar manifest says how many requests differed. The local server gives equal sets; a hosted
API may not (pagination caps, previews per cluster), which is what `verify` is for.

Rooms: `runner.export.jobs` drives one job, `runner.export.outcomes` holds what each request
found (and the verification); this module runs them for a suite and writes the result.

The output is an ID export as `runner.export.ids` writes it (the same formats and groupings;
export-job rows have no score or rank: those columns are null for them), written atomically,
plus a sidecar manifest `<out>.manifest.json` (suite, dataset, one outcome per wire request,
differences). Memory: IDs go to Parquet parts as they arrive; the output is streamed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from runner.api.client import ExploreClient
from runner.api.retry import RetryPolicy
from runner.errors import ExportError
from runner.execute import ExecuteOptions, run_plan, suite_client
from runner.export.ids import ExportFormat, write_ids
from runner.export.jobs import JobEnd, JobOptions, download_ids, run_export_job
from runner.export.outcomes import (
    LiveExportResult,
    Paged,
    RequestOutcome,
    id_rows,
    replace_outcome,
    settle_outcomes,
)
from runner.plan import Plan, WireRequest, expand
from runner.store import RunWriter, public_base_url, scan_requests
from runner.store.atomic import atomic_write_bytes
from runner.suite import Suite, suite_hash
from runner.version import __version__

__all__ = [
    "LiveExportResult",
    "LiveOptions",
    "RequestOutcome",
    "live_export",
]

# Job ends that leave the request to full pagination (where allowed), with the job's message.
_FALL_BACK: Final = frozenset({"UNAVAILABLE", "REJECTED", "CANCELED", "ERROR"})
_IDS_SCHEMA: Final = pa.schema(
    [("wire_key", pa.string()), ("media_id", pa.string()), ("file_name", pa.string())]
)
_BATCH: Final = 65_536


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """How the export jobs are driven.

    `sleep` and `clock` are injectable so that tests of the polling never wait.
    """

    poll_interval_s: float = 2.0
    max_wait_s: float = 600.0
    timeout_s: float = 300.0  # per HTTP request; a download of a large ZIP takes a while
    verify: bool = False
    fallback: bool = True  # False: a REJECTED or unavailable job is an error, not paged through
    jobs_at_once: int = 4
    retry: RetryPolicy = RetryPolicy(max_attempts=4, backoff_s=0.5, max_backoff_s=10.0)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic

    @property
    def job(self) -> JobOptions:
        """The options of one export job."""
        return JobOptions(
            self.poll_interval_s,
            self.max_wait_s,
            self.timeout_s,
            self.retry,
            self.sleep,
            self.clock,
        )


@dataclass(slots=True)
class _Job:
    request: WireRequest
    outcome: RequestOutcome
    ids: int = 0
    fallback: bool = False


async def live_export(
    suite: Suite,
    out: Path | str | IO[bytes],
    *,
    fmt: ExportFormat = "csv",
    group_by: str = "merged",
    options: LiveOptions = LiveOptions(),
    manifest_path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> LiveExportResult:
    """Export every match of every request of `suite` into `out` (see the module doc).

    `manifest_path` defaults to `<out>.manifest.json` for a file, none for a stream.
    Raises `ExportError` for a FAILED or unfinished job or a failed pagination, `ApiError` /
    `TransportError` for an API that cannot be used; nothing is written then.
    """
    env = os.environ if environ is None else environ
    plan = expand(suite)
    started = dt.datetime.now(dt.UTC)
    if manifest_path is None and isinstance(out, (str, Path)):
        manifest_path = Path(f"{out}.manifest.json")
    with tempfile.TemporaryDirectory(prefix="vlbench-live-") as scratch_dir:
        scratch = Path(scratch_dir)
        async with suite_client(suite, environ=env) as client:
            base_url, dataset_id = client.base_url, client.dataset_id
            jobs = await _export_jobs(client, plan, scratch / "jobs.parquet", options)
            to_page = [
                j.request for j in jobs.values() if j.fallback or j.outcome.method == "pagination"
            ]
            if options.verify:
                to_page += [
                    j.request
                    for j in jobs.values()
                    if not j.fallback and j.outcome.method == "export_job"
                ]
            paged = await _paginate(client, suite, plan, to_page, scratch, base_url, dataset_id)
        ids_path = scratch / "jobs.parquet"
        found = [job.outcome for job in jobs.values()]
        outcomes = settle_outcomes(plan, found, paged, ids_path, verify=options.verify)
        rows_frame = id_rows(plan, outcomes, paged, ids_path)
        n_rows = rows_frame.select(pl.len()).collect().item()
        path, rows = write_ids(rows_frame, out, fmt=fmt, group_by=group_by, n_hits=int(n_rows))
    manifest = {
        "suite_name": suite.name,
        "suite_hash": suite_hash(suite),
        "dataset_id": dataset_id,
        "base_url": public_base_url(base_url),
        "tool_version": __version__,
        "started_at": started.isoformat(timespec="milliseconds"),
        "ended_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "output": str(path) if path else None,
        "format": fmt,
        "group_by": group_by,
        "rows": rows,
        "verify": options.verify,
        "requests_differing": sum(o.differs for o in outcomes),
        "requests": [o.to_dict() for o in outcomes],
    }
    written_manifest = None
    if manifest_path is not None:
        written_manifest = _write_manifest(Path(manifest_path), manifest)
    return LiveExportResult(path, written_manifest, rows, tuple(outcomes), options.verify)


# -- export jobs -----------------------------------------------------------------------------------


def _describe(request: WireRequest) -> str:
    queries = ", ".join(request.query_ids)
    return f"query {queries} (mode {request.mode}, setting {request.setting})"


async def _export_jobs(
    client: ExploreClient, plan: Plan, ids_path: Path, options: LiveOptions
) -> dict[str, _Job]:
    """Run the export job of every VQL request; caption requests are marked for pagination."""
    jobs: dict[str, _Job] = {}
    for request in plan.requests:
        lead = request.specs[0]
        method: Literal["export_job", "pagination"] = (
            "export_job" if lead.via == "vql" else "pagination"
        )
        outcome = RequestOutcome(
            request.wire_key, request.query_ids, request.mode, request.setting, method
        )
        jobs[request.wire_key] = _Job(request, outcome)
    gate = asyncio.Semaphore(max(1, options.jobs_at_once))
    lock = asyncio.Lock()
    with pq.ParquetWriter(ids_path, _IDS_SCHEMA) as writer:

        async def one(job: _Job) -> None:
            async with gate:
                await _run_job(client, job, writer, lock, options, ids_path.parent)

        await asyncio.gather(*(one(j) for j in jobs.values() if j.outcome.method == "export_job"))
    return jobs


async def _run_job(
    client: ExploreClient,
    job: _Job,
    writer: Any,
    lock: asyncio.Lock,
    options: LiveOptions,
    ids_dir: Path,
) -> None:
    """One request's export job: its IDs into `writer`, or the request marked for paging."""
    request = job.request
    lead = request.specs[0]
    what = f"export of {_describe(request)}"
    start_params = {
        "vql": lead.params()["vql"],
        "entity_type": lead.entity_type,
        "export_format": "parquet",
        "file_name": f"vlbench-{request.wire_key}",
        "include_images": "false",
    }
    end = await run_export_job(client, start_params, what=what, options=options.job)
    job.outcome = replace_outcome(
        job.outcome,
        job_id=end.task_id,
        job_status=None if end.status == "UNAVAILABLE" else end.status,
        entities_count=end.entities_count,
        note=end.message,
    )
    if end.status in _FALL_BACK:
        if not options.fallback:
            raise ExportError(f"{what}: {end.describe()}")
        job.fallback = True
        note = f"{end.describe()}; paged through instead"
        job.outcome = replace_outcome(job.outcome, method="pagination", note=note)
        return
    if end.status != "COMPLETED":
        raise ExportError(f"{what}: {end.describe()}")
    scratch = Path(tempfile.mkdtemp(prefix=f"job-{request.wire_key}-", dir=ids_dir))
    try:
        job.ids = await _write_job_ids(client, end, scratch, writer, lock, job, options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    job.outcome = replace_outcome(job.outcome, n_ids=job.ids)


async def _write_job_ids(
    client: ExploreClient,
    end: JobEnd,
    scratch: Path,
    writer: Any,
    lock: asyncio.Lock,
    job: _Job,
    options: LiveOptions,
) -> int:
    what = f"export of {_describe(job.request)}"
    n = 0
    async for batch in download_ids(client, end, scratch, what=what, options=options.job):
        keys = pa.array([job.request.wire_key] * batch.num_rows, pa.string())
        rows = pa.table(
            {"wire_key": keys, "media_id": batch["media_id"], "file_name": batch["file_name"]},
            schema=_IDS_SCHEMA,
        )
        async with lock:
            writer.write_table(rows, row_group_size=_BATCH)
        n += rows.num_rows
    return n


# -- full pagination -------------------------------------------------------------------------------


async def _paginate(
    client: ExploreClient,
    suite: Suite,
    plan: Plan,
    requests: Sequence[WireRequest],
    scratch: Path,
    base_url: str,
    dataset_id: str,
) -> Paged:
    """Page through `requests` in full with the run executor, into a scratch run directory."""
    if not requests:
        return Paged(None, frozenset())
    specs = tuple(spec for r in requests for spec in r.specs)
    sub = Plan(plan.dataset_id, specs, tuple(requests))
    writer = RunWriter.create(
        scratch / "pagination",
        suite_name=suite.name,
        suite_hash=suite_hash(suite),
        base_url=base_url,
        dataset_id=dataset_id,
        tool_version=__version__,
        requests_planned=len(specs),
    )
    options = ExecuteOptions(
        concurrency=suite.concurrency,
        max_pages=None,
        retry=RetryPolicy(
            suite.retries.max_attempts, suite.retries.backoff_s, suite.retries.max_backoff_s
        ),
    )
    with writer:
        result = await run_plan(sub, writer, client=client, options=options)
    if result.status != "complete" or result.counts.requests_failed:
        failed = (
            scan_requests(result.run_dir, allow_running=True)
            .filter(pl.col("outcome") != "ok")
            .select("query_id", "mode", "error")
            .head(3)
            .collect()
        )
        shown = "; ".join(f"{q} ({m}): {e}" for q, m, e in failed.iter_rows())
        n_failed = result.counts.requests_failed
        raise ExportError(
            f"full pagination failed for {n_failed} request(s): {shown or result.message}"
        )
    return Paged(result.run_dir, frozenset(r.wire_key for r in requests))


def _write_manifest(path: Path, manifest: Mapping[str, Any]) -> Path:
    """The sidecar manifest, written by the store's one atomic write (temp, fsync, rename)."""
    atomic_write_bytes(path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return path
