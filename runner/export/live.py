"""Every match of each query of a suite, through the API's own export job, not page by page.

    result = await live_export(load_suite("queries/demo.yaml"), "ids.csv", fmt="csv", verify=True)

For each unique wire request of the suite (query text × mode × setting):
- VQL modes (fts, semantic) drive the export job: `export_context_async` (the request's VQL and
  entity_type, `export_format=parquet`, a `file_name`), then `export_status` every
  `poll_interval_s` until COMPLETED, FAILED or REJECTED (at most `max_wait_s`), then the ZIP at
  `download_uri` (relative URIs are joined to the base URL; the bearer token is sent only to the
  API's own origin, never to a presigned storage URL), whose `metadata.parquet` (or
  `metadata.json`) holds one row per matching media item.
- Caption mode has no VQL, so it has no export job: its requests are paged through in full
  (`max_pages: all`), by the run executor (`runner.execute.run_plan`: the same pacing, retries
  and pagination as `vlbench run`).
- Where the job is not available (export call answers 404 / 405 / 501, or the job is REJECTED,
  e.g. too many entities) the request falls back to full pagination, and the outcome records
  why (the job's `result_message`).
  With `fallback=False` (`--no-fallback`) these are errors instead, like FAILED.
- A job that FAILED is an error (`ExportError` naming the query, the job and its
  `result_message`): nothing is written. So is a job still unfinished after `max_wait_s`, and a
  request whose full pagination failed.
With `verify`, the VQL requests are ALSO paged through in full, and each outcome records the
difference between the export job's ID set and pagination's (counts and a few examples); the
sidecar manifest says how many requests differed. The local server gives equal sets; a hosted
API may not (pagination caps, previews per cluster), which is what `verify` is for.

The output is an ID export as `runner.export.ids` writes it (the same formats and groupings;
export-job rows have no score or rank: those columns are null for them), written atomically,
plus a sidecar manifest `<out>.manifest.json` (suite, dataset, one outcome per wire request,
differences). Memory: IDs go to Parquet parts as they arrive; the output is streamed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import secrets
import shutil
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from runner import __version__
from runner.api.client import BadBody, ExploreClient, Throttled
from runner.errors import ApiError, AuthError, ExportError, TransportError
from runner.execute import PAGE_CAP, ExecuteOptions, RetryPolicy, run_plan, suite_client
from runner.export.ids import ExportFormat, write_ids
from runner.plan import Plan, WireRequest, expand
from runner.store import RunWriter, scan_hits, scan_requests
from runner.suite import Suite, suite_hash

__all__ = [
    "LiveExportResult",
    "LiveOptions",
    "RequestOutcome",
    "live_export",
]

_NOT_AVAILABLE: Final = frozenset({404, 405, 501})
_IDS_SCHEMA: Final = pa.schema(
    [("wire_key", pa.string()), ("media_id", pa.string()), ("file_name", pa.string())]
)
_EXAMPLES: Final = 5
_BATCH: Final = 65_536
_T = TypeVar("_T")


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


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """How one wire request's IDs were obtained, and what verification found.

    `method`: "export_job" or "pagination"; `note`: why it fell back (or the job's message).
    `only_export` / `only_pagination`: with verify, IDs found by one way and not the other.
    """

    wire_key: str
    query_ids: tuple[str, ...]
    mode: str
    setting: str
    method: Literal["export_job", "pagination"]
    n_ids: int = 0
    job_id: str | None = None
    job_status: str | None = None
    entities_count: int | None = None
    note: str | None = None
    only_export: int | None = None
    only_pagination: int | None = None
    only_export_examples: tuple[str, ...] = ()
    only_pagination_examples: tuple[str, ...] = ()

    @property
    def differs(self) -> bool:
        return bool(self.only_export or self.only_pagination)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LiveExportResult:
    """What a live export wrote and how each request went."""

    path: Path | None
    manifest_path: Path | None
    rows: int
    outcomes: tuple[RequestOutcome, ...]
    verified: bool

    @property
    def differences(self) -> tuple[RequestOutcome, ...]:
        return tuple(o for o in self.outcomes if o.differs)

    @property
    def fallbacks(self) -> tuple[RequestOutcome, ...]:
        return tuple(o for o in self.outcomes if o.method == "pagination" and o.note)


@dataclass(slots=True)
class _Job:
    request: WireRequest
    outcome: RequestOutcome
    ids: int = 0
    fallback: bool = False
    messages: list[str] = field(default_factory=list)


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
        outcomes = _outcomes(jobs, paged, scratch / "jobs.parquet", options.verify)
        rows_frame = _rows(plan, jobs, paged, scratch / "jobs.parquet")
        n_rows = rows_frame.select(pl.len()).collect().item()
        path, rows = write_ids(rows_frame, out, fmt=fmt, group_by=group_by, n_hits=int(n_rows))
    manifest = {
        "suite_name": suite.name,
        "suite_hash": suite_hash(suite),
        "dataset_id": dataset_id,
        "base_url": _public(base_url),
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
        written_manifest = _atomic_write(
            Path(manifest_path), orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        )
    return LiveExportResult(path, written_manifest, rows, tuple(outcomes), options.verify)


# -- the API ---------------------------------------------------------------------------------------


def _public(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


async def _retried(call: Callable[[], Awaitable[_T]], options: LiveOptions) -> _T:
    """`call()` (one client call), again after transient failures: 429, 5xx, timeouts, drops.

    Not after an auth error, an unavailable export (404 / 405 / 501) or a body that is not JSON.
    """
    rng = random.Random()
    for attempt in range(1, options.retry.max_attempts + 1):
        try:
            return await call()
        except (AuthError, BadBody):
            raise
        except (ApiError, TransportError) as exc:
            status = getattr(exc, "status", None)
            transient = isinstance(exc, TransportError) or status == 429 or (status or 0) >= 500
            if status in _NOT_AVAILABLE or not transient or attempt >= options.retry.max_attempts:
                raise
            wait = options.retry.backoff(attempt, rng)
            if isinstance(exc, Throttled) and exc.retry_after is not None:
                wait = exc.retry_after
            await options.sleep(wait)
    raise AssertionError("unreachable")


async def _get_object(
    client: ExploreClient,
    path: str,
    params: Mapping[str, str],
    *,
    what: str,
    options: LiveOptions,
) -> dict[str, Any]:
    """The JSON object at `path` (under the API prefix), transient failures retried."""
    parsed = await _retried(
        lambda: client.get_json(path, params, what=what, timeout_s=options.timeout_s), options
    )
    if not isinstance(parsed, dict):
        raise TransportError(f"{what}: body is not a JSON object", kind="bad_body")
    return parsed


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
    request = job.request
    lead = request.specs[0]
    params = lead.params()
    base = f"/dataset/{quote(client.dataset_id, safe='')}"
    what = f"export of {_describe(request)}"
    start_params = {
        "vql": params["vql"],
        "entity_type": lead.entity_type,
        "export_format": "parquet",
        "file_name": f"vlbench-{request.wire_key}",
        "include_images": "false",
    }
    try:
        started = await _get_object(
            client, f"{base}/export_context_async", start_params, what=what, options=options
        )
    except ApiError as exc:
        if exc.status in _NOT_AVAILABLE and not isinstance(exc, AuthError):
            if not options.fallback:
                raise ExportError(f"{what}: export job not available (HTTP {exc.status})") from None
            job.fallback = True
            job.outcome = _replace(
                job.outcome,
                method="pagination",
                note=f"export job not available (HTTP {exc.status}): paged through instead",
            )
            return
        raise
    task_id = str(started.get("id") or "")
    if not task_id:
        raise ExportError(f"{what}: export_context_async gave no task id")
    status = await _poll(client, base, task_id, what, options)
    state = str(status.get("status"))
    message = status.get("result_message")
    job.outcome = _replace(
        job.outcome,
        job_id=task_id,
        job_status=state,
        entities_count=_int_or_none(status.get("entities_count", started.get("entities_count"))),
        note=str(message) if message else None,
    )
    if state == "REJECTED":
        if not options.fallback:
            raise ExportError(f"{what}: export job {task_id} REJECTED: {message or 'no message'}")
        job.fallback = True
        job.outcome = _replace(
            job.outcome,
            method="pagination",
            note=(
                f"export job {task_id} REJECTED ({message or 'no message'}): paged through instead"
            ),
        )
        return
    if state == "FAILED":
        raise ExportError(f"{what}: export job {task_id} FAILED: {message or 'no message'}")
    uri = status.get("download_uri")
    if not isinstance(uri, str) or not uri:
        raise ExportError(f"{what}: export job {task_id} is COMPLETED but has no download_uri")
    url = urljoin(client.base_url + "/", uri)
    scratch = Path(tempfile.mkdtemp(prefix=f"job-{request.wire_key}-", dir=ids_dir))
    try:
        zip_path = scratch / "export.zip"
        download = f"{what}: download"
        await _retried(
            lambda: client.download(url, zip_path, what=download, timeout_s=options.timeout_s),
            options,
        )
        n = 0
        for batch in _read_zip(zip_path, scratch, f"{what}: export job {task_id}"):
            keys = pa.array([request.wire_key] * batch.num_rows, pa.string())
            rows = pa.table(
                {"wire_key": keys, "media_id": batch["media_id"], "file_name": batch["file_name"]},
                schema=_IDS_SCHEMA,
            )
            async with lock:
                writer.write_table(rows, row_group_size=_BATCH)
            n += rows.num_rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    job.ids = n
    job.outcome = _replace(job.outcome, n_ids=n)


async def _poll(
    client: ExploreClient, base: str, task_id: str, what: str, options: LiveOptions
) -> dict[str, Any]:
    deadline = options.clock() + options.max_wait_s
    last: dict[str, Any] = {}
    while True:
        last = await _get_object(
            client,
            f"{base}/export_status",
            {"export_task_id": task_id},
            what=f"{what}: status",
            options=options,
        )
        if last.get("status") in ("COMPLETED", "FAILED", "REJECTED"):
            return last
        if options.clock() >= deadline:
            raise ExportError(
                f"{what}: export job {task_id} did not finish within {options.max_wait_s:g} s "
                f"(last status {last.get('status')}, progress {last.get('progress')})"
            )
        await options.sleep(options.poll_interval_s)


def _read_zip(zip_path: Path, scratch: Path, what: str) -> Iterator[pa.Table]:
    """media_id and file_name of the ZIP's metadata.parquet (in batches) or metadata.json.

    The Parquet member is extracted to `scratch` and read a batch at a time (bounded memory);
    a JSON member is one array and is parsed whole.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise ExportError(f"{what}: the download is not a ZIP file") from None
    with archive:
        names = {Path(n).name: n for n in archive.namelist()}
        if "metadata.parquet" in names:
            member = Path(archive.extract(names["metadata.parquet"], scratch))
            try:
                parquet = pq.ParquetFile(member)
                columns = [c for c in ("media_id", "file_name") if c in parquet.schema_arrow.names]
                if "media_id" not in columns:
                    raise ExportError(f"{what}: the metadata has no media_id column")
                for batch in parquet.iter_batches(batch_size=_BATCH, columns=columns):
                    yield _id_columns(pa.Table.from_batches([batch]))
            except pa.ArrowException as exc:
                raise ExportError(f"{what}: metadata.parquet cannot be read ({exc})") from None
            return
        if "metadata.json" not in names:
            raise ExportError(f"{what}: the ZIP holds no metadata.parquet or metadata.json")
        try:
            rows = orjson.loads(archive.read(names["metadata.json"]))
        except orjson.JSONDecodeError as exc:
            raise ExportError(f"{what}: metadata.json is not JSON ({exc})") from None
    if not isinstance(rows, list):
        raise ExportError(f"{what}: metadata.json is not a list of rows")
    table = pa.Table.from_pylist([r for r in rows if isinstance(r, dict)])
    if "media_id" not in table.column_names:
        raise ExportError(f"{what}: the metadata has no media_id column")
    yield _id_columns(table)


def _id_columns(table: pa.Table) -> pa.Table:
    file_names = (
        table["file_name"].cast(pa.string())
        if "file_name" in table.column_names
        else pa.nulls(table.num_rows, pa.string())
    )
    return pa.table({"media_id": table["media_id"].cast(pa.string()), "file_name": file_names})


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return None


def _replace(outcome: RequestOutcome, **changes: Any) -> RequestOutcome:
    return RequestOutcome(**{**asdict(outcome), **changes})


# -- full pagination -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Paged:
    run_dir: Path | None
    wire_keys: frozenset[str]


async def _paginate(
    client: ExploreClient,
    suite: Suite,
    plan: Plan,
    requests: Sequence[WireRequest],
    scratch: Path,
    base_url: str,
    dataset_id: str,
) -> _Paged:
    """Page through `requests` in full with the run executor, into a scratch run directory."""
    if not requests:
        return _Paged(None, frozenset())
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
    return _Paged(result.run_dir, frozenset(r.wire_key for r in requests))


# -- results ---------------------------------------------------------------------------------------


def _outcomes(
    jobs: Mapping[str, _Job], paged: _Paged, ids_path: Path, verify: bool
) -> list[RequestOutcome]:
    out = []
    exported = pl.scan_parquet(ids_path)
    for job in jobs.values():
        outcome = job.outcome
        if (
            outcome.method == "export_job"
            and verify
            and job.request.wire_key in paged.wire_keys
            and paged.run_dir
        ):
            key = job.request.wire_key
            mine = exported.filter(pl.col("wire_key") == key).select("media_id").unique()
            theirs = (
                scan_hits(paged.run_dir)
                .filter(pl.col("request_key").is_in([s.key for s in job.request.specs]))
                .select("media_id")
                .unique()
            )
            only_e = mine.join(theirs, on="media_id", how="anti").sort("media_id").collect()
            only_p = theirs.join(mine, on="media_id", how="anti").sort("media_id").collect()
            outcome = _replace(
                outcome,
                only_export=only_e.height,
                only_pagination=only_p.height,
                only_export_examples=tuple(only_e["media_id"].head(_EXAMPLES).to_list()),
                only_pagination_examples=tuple(only_p["media_id"].head(_EXAMPLES).to_list()),
            )
        if outcome.method == "pagination" and paged.run_dir is not None:
            keys = [s.key for s in job.request.specs[:1]]
            n = (
                scan_hits(paged.run_dir)
                .filter(pl.col("request_key").is_in(keys))
                .select(pl.col("media_id").n_unique())
                .collect()
                .item()
            )
            pages = (
                scan_requests(paged.run_dir)
                .filter(pl.col("request_key").is_in(keys))
                .select(pl.len())
                .collect()
                .item()
            )
            note = outcome.note
            if pages >= PAGE_CAP:
                capped = f"pagination stopped at the cap of {PAGE_CAP} pages"
                note = f"{note}; {capped}" if note else capped
            outcome = _replace(outcome, n_ids=int(n), note=note)
        out.append(outcome)
    return out


_ROW_COLUMNS: Final = {
    "query_id": pl.String,
    "mode": pl.String,
    "setting": pl.String,
    "media_id": pl.String,
    "file_name": pl.String,
    "score": pl.Float64,
    "raw_score": pl.Float64,
    "score_type": pl.String,
    "rank": pl.Int32,
}


def _rows(plan: Plan, jobs: Mapping[str, _Job], paged: _Paged, ids_path: Path) -> pl.LazyFrame:
    """Hit-like rows for `write_ids`: export-job IDs fanned out to their specs, paged hits."""
    spec_frame = pl.DataFrame(
        {
            "wire_key": [s.wire_key for s in plan.specs],
            "query_id": [s.query_id for s in plan.specs],
            "mode": [s.mode for s in plan.specs],
            "setting": [s.setting for s in plan.specs],
        }
    ).lazy()
    by_job = [k for k, j in jobs.items() if j.outcome.method == "export_job"]
    frames = [
        pl.scan_parquet(ids_path)
        .filter(pl.col("wire_key").is_in(by_job))
        .join(spec_frame, on="wire_key", how="inner")
        .with_columns(
            pl.lit(None, pl.Float64).alias("score"),
            pl.lit(None, pl.Float64).alias("raw_score"),
            pl.lit(None, pl.String).alias("score_type"),
            pl.lit(None, pl.Int32).alias("rank"),
        )
        .select(list(_ROW_COLUMNS))
    ]
    by_pages = [k for k, j in jobs.items() if j.outcome.method == "pagination"]
    if paged.run_dir is not None and by_pages:
        keys = [s.key for s in plan.specs if s.wire_key in set(by_pages)]
        frames.append(
            scan_hits(paged.run_dir)
            .filter(pl.col("request_key").is_in(keys))
            .select(list(_ROW_COLUMNS))
            .cast(_ROW_COLUMNS)  # type: ignore[arg-type]
        )
    return pl.concat(frames, how="vertical")


def _atomic_write(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
