"""The API's export job, one at a time: start it, poll it, download its ZIP, read the IDs in it.

    end = await run_export_job(client, params, what="export of query q1", options=JobOptions())
    if end.status == "COMPLETED":
        async for table in download_ids(client, end, scratch, what=..., options=...):
            ...  # media_id, file_name: one Arrow table a batch

The job as the hosted API runs it (`explore-api.md`, its last section): the start call needs
`file_name` and `export_format`; its answer may be `{"id"}` alone, a whole task (float
`progress`) or a job already over (REJECTED). `export_status` is then polled every
`poll_interval_s` until the job is over: COMPLETED, FAILED, REJECTED, CANCELED / CANCELLED, or
a 200 carrying `"error"`, each returned at once with its message, never waited out. A start
answered 404 / 405 / 501 means the API has no export job ("UNAVAILABLE"). Every call is retried
as `runner.api.retry` says (the one policy). The ZIP holds `metadata.parquet` (read a batch at a
time: bounded memory) or `metadata.json` (the documented `{"info", "media_items": [...]}` or a
bare list); the file name column may be `file_name`, `image_filename` or `filename`.
"""

from __future__ import annotations

import asyncio
import random
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from runner.api.client import ExploreClient, ExportTask
from runner.api.retry import RetryPolicy, call_with_retries
from runner.errors import ApiError, AuthError, ExportError

__all__ = [
    "FILE_NAME_COLUMNS",
    "JobEnd",
    "JobOptions",
    "download_ids",
    "read_export_zip",
    "run_export_job",
]

# Start answers that mean "this API has no export job": fall back to paging where allowed.
_NOT_AVAILABLE: Final = frozenset({404, 405, 501})
# What the file name column is called: the documented JSON's, an older page's, a common one.
FILE_NAME_COLUMNS: Final = ("file_name", "image_filename", "filename")
_BATCH: Final = 65_536


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How patiently a job is driven; `sleep` and `clock` are injectable so tests never wait."""

    poll_interval_s: float = 2.0
    max_wait_s: float = 600.0
    timeout_s: float = 300.0  # per HTTP request; a download of a large ZIP takes a while
    retry: RetryPolicy = RetryPolicy(max_attempts=4, backoff_s=0.5, max_backoff_s=10.0)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True, slots=True)
class JobEnd:
    """How a job ended: its last state (or "UNAVAILABLE": the API has no export job)."""

    status: str
    task_id: str | None = None
    message: str | None = None
    entities_count: int | None = None
    download_uri: str | None = None

    def describe(self) -> str:
        """`export job <id> REJECTED: <message>`, for notes and errors."""
        if self.status == "UNAVAILABLE":
            return f"export job not available ({self.message})"
        job = f"export job {self.task_id}" if self.task_id else "export job"
        return f"{job} {self.status}: {self.message or 'no message'}"


async def run_export_job(
    client: ExploreClient,
    params: Mapping[str, str],
    *,
    what: str,
    options: JobOptions,
    rng: random.Random | None = None,
) -> JobEnd:
    """Start an export job with `params` and follow it until it is over.

    Returns how it ended; raises `ExportError` for a start answer with neither an id nor a
    state, or a job still going after `max_wait_s`; the API's own errors (401, 422, ...) pass.
    """
    rng = rng or random.Random()
    try:
        task = await _retried(
            lambda: client.start_export(params, what=what, timeout_s=options.timeout_s),
            options,
            rng,
            client,
        )
    except ApiError as exc:
        if exc.status in _NOT_AVAILABLE and not isinstance(exc, AuthError):
            return JobEnd("UNAVAILABLE", message=f"HTTP {exc.status}")
        raise
    entities = task.entities_count
    if not task.finished:
        if task.task_id is None:
            raise ExportError(f"{what}: export_context_async gave no task id")
        task = await _poll(client, task.task_id, what, options, rng)
    return JobEnd(
        status=task.status or "",
        task_id=task.task_id,
        message=task.message,
        entities_count=task.entities_count if task.entities_count is not None else entities,
        download_uri=task.download_uri,
    )


async def _poll(
    client: ExploreClient, task_id: str, what: str, options: JobOptions, rng: random.Random
) -> ExportTask:
    deadline = options.clock() + options.max_wait_s
    label = f"{what}: status"
    while True:
        task = await _retried(
            lambda: client.export_status(task_id, what=label, timeout_s=options.timeout_s),
            options,
            rng,
            client,
        )
        if task.finished:
            # The status answer may leave the id out; the job is still the one we started.
            return task if task.task_id else _with_id(task, task_id)
        if options.clock() >= deadline:
            raise ExportError(
                f"{what}: export job {task_id} did not finish within {options.max_wait_s:g} s "
                f"(last status {task.status}, progress {task.progress})"
            )
        await options.sleep(options.poll_interval_s)


def _with_id(task: ExportTask, task_id: str) -> ExportTask:
    return ExportTask(
        task_id,
        task.status,
        task.progress,
        task.download_uri,
        task.message,
        task.entities_count,
    )


async def download_ids(
    client: ExploreClient,
    end: JobEnd,
    scratch: Path,
    *,
    what: str,
    options: JobOptions,
) -> AsyncIterator[pa.Table]:
    """Download a COMPLETED job's ZIP into `scratch` and yield its `media_id`, `file_name`.

    A relative `download_uri` is joined to the base URL; the token goes only to the API's own
    origin (never to a presigned storage URL). `ExportError` for a job with no `download_uri`
    or a ZIP that cannot be read.
    """
    if not end.download_uri:
        raise ExportError(f"{what}: export job {end.task_id} is COMPLETED but has no download_uri")
    url = urljoin(client.base_url + "/", end.download_uri)
    zip_path = scratch / "export.zip"
    label = f"{what}: download"
    await _retried(
        lambda: client.download(url, zip_path, what=label, timeout_s=options.timeout_s),
        options,
        random.Random(),
        client,
    )
    for table in read_export_zip(zip_path, scratch, f"{what}: export job {end.task_id}"):
        yield table


async def _retried(
    call: Callable[[], Awaitable[Any]],
    options: JobOptions,
    rng: random.Random,
    client: ExploreClient,
) -> Any:
    return await call_with_retries(call, options.retry, rng, client.pacer, sleep=options.sleep)


# -- the ZIP ---------------------------------------------------------------------------------------


def read_export_zip(zip_path: Path, scratch: Path, what: str) -> Iterator[pa.Table]:
    """`media_id` and `file_name` of the ZIP's metadata.parquet (in batches) or metadata.json.

    The Parquet member is extracted to `scratch` and read a batch at a time (bounded memory); a
    JSON member (an object with `media_items`, or a bare list of rows) is parsed whole.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise ExportError(f"{what}: the download is not a ZIP file") from None
    with archive:
        names = {Path(n).name: n for n in archive.namelist()}
        if "metadata.parquet" in names:
            member = Path(archive.extract(names["metadata.parquet"], scratch))
            yield from _read_parquet(member, what)
            return
        if "metadata.json" not in names:
            raise ExportError(f"{what}: the ZIP holds no metadata.parquet or metadata.json")
        raw = archive.read(names["metadata.json"])
    yield _read_json(raw, what)


def _read_parquet(member: Path, what: str) -> Iterator[pa.Table]:
    try:
        parquet = pq.ParquetFile(member)
        present = parquet.schema_arrow.names
        if "media_id" not in present:
            raise ExportError(f"{what}: the metadata has no media_id column")
        name_column = next((c for c in FILE_NAME_COLUMNS if c in present), None)
        columns = ["media_id"] + ([name_column] if name_column else [])
        for batch in parquet.iter_batches(batch_size=_BATCH, columns=columns):
            yield _id_columns(pa.Table.from_batches([batch]))
    except pa.ArrowException as exc:
        raise ExportError(f"{what}: metadata.parquet cannot be read ({exc})") from None


def _read_json(raw: bytes, what: str) -> pa.Table:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ExportError(f"{what}: metadata.json is not JSON ({exc})") from None
    rows = parsed.get("media_items") if isinstance(parsed, dict) else parsed
    if not isinstance(rows, list):
        raise ExportError(
            f"{what}: metadata.json is neither an object with media_items nor a list of rows"
        )
    items = [r for r in rows if isinstance(r, dict)]
    if any(item.get("media_id") is None for item in items):
        raise ExportError(f"{what}: the metadata has a row without media_id")
    return pa.table(
        {
            "media_id": pa.array([str(i["media_id"]) for i in items], pa.string()),
            "file_name": pa.array([_file_name(i) for i in items], pa.string()),
        }
    )


def _file_name(item: Mapping[str, Any]) -> str | None:
    """A JSON row's file name, under whichever of the known names the row uses."""
    value = next((item[c] for c in FILE_NAME_COLUMNS if item.get(c) is not None), None)
    return None if value is None else str(value)


def _id_columns(table: pa.Table) -> pa.Table:
    name_column = next((c for c in FILE_NAME_COLUMNS if c in table.column_names), None)
    file_names = (
        table[name_column].cast(pa.string())
        if name_column
        else pa.nulls(table.num_rows, pa.string())
    )
    return pa.table({"media_id": table["media_id"].cast(pa.string()), "file_name": file_names})
