"""Export jobs of the local server: a ZIP of every matching media row, built as an asyncio task.

A job starts INIT with the number of matching rows, then goes IN_PROGRESS and COMPLETED (its
ZIP on disk under the server's work dir), or REJECTED at once when the rows exceed
`max_entities`, or FAILED when the build breaks. `progress` is a float (0.0 .. 100.0).

The ZIP holds `metadata.parquet` (one row per item: `EXPORT_COLUMNS` and `cluster_id`) or
`metadata.json` in the documented object form:

    {"info": {"dataset_id", "export_task_id", "entity_type", "entities_count", "created_at"},
     "media_items": [{"media_id", "file_name", "file_path", "cluster_id", "uniqueness_score",
                      "metadata_items": [{"type": "caption" | "label", "value": ...}, ...]}]}

Each job's state is also kept as `<task id>.json` in the work dir, rewritten atomically at every
change, so that with `vlbench serve --workers N` (one work dir for all) a poll or a download
reaching another worker than the one building the job finds it there.

`fault` (`vlbench serve --fault export=...`) ends every job another documented way, for the
client's tests: `failed` (FAILED while building), `rejected` (the start answer already says
REJECTED), `canceled` / `cancelled` (IN_PROGRESS, then that status, spelled so), `error` (the start
answer is a 200 carrying only `{"error": "... exceeds threshold ..."}`, no task), `id-only` (the
start answer is `{"id"}` alone; the job then runs as usual). `file_name_key="image_filename"`
(`--fault contract=image-filename`) names the file-name column as an older page does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import io
import re
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from runner.server.index import SearchIndex
from runner.server.query import SearchRequest
from runner.store.atomic import atomic_write_bytes

__all__ = ["ExportJob", "ExportManager", "ExportStatus", "export_table"]

ExportStatus = Literal[
    "INIT", "IN_PROGRESS", "COMPLETED", "FAILED", "REJECTED", "CANCELED", "CANCELLED"
]
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9._-]+")
_TASK_ID: Final = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$")  # uuid4, a file name


@dataclass(slots=True)
class ExportJob:
    """One export task's state, as `export_status` reports it."""

    id: str
    dataset_id: str
    export_format: Literal["parquet", "json"]
    file_name: str
    entities_count: int
    created_at: dt.datetime
    entity_type: str = "IMAGES"
    status: ExportStatus = "INIT"
    progress: float = 0.0
    result_message: str | None = None
    zip_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def start_json(self, fault: str | None) -> dict[str, object]:
        """The export_context_async answer: the whole task, INIT (or REJECTED), or a variant."""
        if fault == "id-only":
            return {"id": self.id}
        if fault == "error":
            return {"error": self.result_message}
        # An over-size export says INIT and is REJECTED on the first poll; with the `rejected`
        # fault the start answer says so at once (both happen on the hosted side).
        status = "REJECTED" if fault == "rejected" else "INIT"
        message = self.result_message if status == "REJECTED" else None
        return self.to_json(None) | {"status": status, "progress": 0.0, "result_message": message}

    def state(self) -> dict[str, object]:
        """Every field, as JSON (the job's file in the work dir)."""
        return {
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
            "created_at": self.created_at.isoformat(),
            "zip_path": None if self.zip_path is None else str(self.zip_path),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ExportJob:
        zip_path = state["zip_path"]
        return cls(
            **state
            | {
                "created_at": dt.datetime.fromisoformat(state["created_at"]),
                "zip_path": None if zip_path is None else Path(zip_path),
            }
        )

    def to_json(self, download_uri: str | None) -> dict[str, object]:
        """The export_status answer (`download_uri` only once COMPLETED)."""
        return {
            "id": self.id,
            "dataset_id": self.dataset_id,
            "status": self.status,
            "progress": self.progress,
            "entities_count": self.entities_count,
            "export_format": self.export_format,
            "file_name": self.file_name,
            "created_at": self.created_at.isoformat(),
            "download_uri": download_uri if self.status == "COMPLETED" else None,
            "result_message": self.result_message,
        }


class ExportManager:
    """Starts, tracks and finally cancels the export tasks of one server.

    `delay_s` holds each job IN_PROGRESS that long first, so tests can watch the states go by.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        max_entities: int,
        fault: str | None = None,
        delay_s: float = 0.0,
        file_name_key: str = "file_name",
    ) -> None:
        self._workdir = workdir
        self._max_entities = max_entities
        self.fault = fault
        self._delay_s = delay_s
        # What the ZIP calls the file name (an older page of the documentation: image_filename).
        self._file_name_key = file_name_key
        self._jobs: dict[str, ExportJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, task_id: str) -> ExportJob | None:
        """The job with this id (this worker's, else another's from its file), or None."""
        job = self._jobs.get(task_id)
        if job is not None or not _TASK_ID.match(task_id):
            return job
        with contextlib.suppress(FileNotFoundError):
            return ExportJob.from_state(orjson.loads(self._state_path(task_id).read_bytes()))
        return None

    def _state_path(self, task_id: str) -> Path:
        return self._workdir / f"{task_id}.json"

    def _save(self, job: ExportJob) -> None:
        # Not durable: the folder is temporary; a reader sees the old state or the new, whole.
        atomic_write_bytes(self._state_path(job.id), orjson.dumps(job.state()), durable=False)

    def start(
        self,
        rows: pa.Table,
        *,
        dataset_id: str,
        export_format: Literal["parquet", "json"],
        file_name: str | None,
        include_images: bool,
        entity_type: str = "IMAGES",
    ) -> ExportJob:
        """Register a job for `rows` and start building its ZIP (unless it is rejected).

        With the `error` fault the job is not kept (the answer names no task).
        """
        task_id = str(uuid.uuid4())
        name = (
            _UNSAFE_NAME.sub("_", file_name or f"export-{dataset_id}")[:100].strip("._") or "export"
        )
        job = ExportJob(
            id=task_id,
            dataset_id=dataset_id,
            export_format=export_format,
            file_name=f"{name}.zip",
            entities_count=rows.num_rows,
            created_at=dt.datetime.now(dt.UTC),
            entity_type=entity_type,
        )
        if self.fault == "error":
            job.status = "FAILED"
            job.result_message = (
                f"Export of {rows.num_rows} entities exceeds threshold ({self._max_entities})"
            )
            return job
        if include_images:
            job.notes.append("images are not stored on this server: the ZIP holds metadata only")
        self._jobs[task_id] = job
        if rows.num_rows > self._max_entities or self.fault == "rejected":
            job.status = "REJECTED"
            job.result_message = (
                f"Export of {rows.num_rows} entities exceeds the maximum of {self._max_entities}; "
                "narrow the filters"
                if rows.num_rows > self._max_entities
                else "Export rejected (injected fault: export=rejected)"
            )
            self._save(job)
            return job
        job.status, job.progress = "IN_PROGRESS", 10.0
        self._save(job)
        task = asyncio.get_running_loop().create_task(self._build(job, rows))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def close(self) -> None:
        """Cancel unfinished builds and wait for them."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _build(self, job: ExportJob, rows: pa.Table) -> None:
        try:
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            if self.fault in ("canceled", "cancelled"):
                job.status = "CANCELED" if self.fault == "canceled" else "CANCELLED"
                job.result_message = f"Export task was {self.fault} (injected fault)"
                self._save(job)
                return
            if self.fault == "failed":
                raise RuntimeError("injected export failure (export=failed)")
            path = self._workdir / f"{job.id}.zip"
            await asyncio.to_thread(_write_zip, path, rows, job, self._file_name_key)
        except asyncio.CancelledError:
            job.status, job.result_message = "FAILED", "export cancelled: the server stopped"
            self._save(job)
            raise
        except Exception as exc:  # noqa: BLE001 - a job reports any failure as FAILED
            job.status, job.result_message = "FAILED", f"Export failed: {exc}"
            self._save(job)
            return
        job.zip_path, job.status, job.progress = path, "COMPLETED", 100.0
        job.result_message = "; ".join(job.notes) or None
        self._save(job)


def export_table(index: SearchIndex, request: SearchRequest) -> pa.Table:
    """Every item matching `request`, best first: `EXPORT_COLUMNS` and its `cluster_id` at the
    request's granularity."""
    rows = index.export_rows(request)
    cluster_of = {m.media_id: c.cluster_id for c in index.search(request) for m in c.members}
    ids = [cluster_of[media_id] for media_id in rows.column("media_id").to_pylist()]
    return rows.append_column("cluster_id", pa.array(ids, type=pa.string()))


def _write_zip(path: Path, rows: pa.Table, job: ExportJob, file_name_key: str) -> None:
    """Write the ZIP next to its final name and rename it, so a reader never sees half a file."""
    if file_name_key != "file_name":
        rows = rows.rename_columns(
            [file_name_key if c == "file_name" else c for c in rows.column_names]
        )
    if job.export_format == "parquet":
        buffer = io.BytesIO()
        pq.write_table(rows, buffer)
        member, data = "metadata.parquet", buffer.getvalue()
    else:
        document = _metadata_json(rows, job, file_name_key)
        member, data = "metadata.json", orjson.dumps(document, default=str)
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, data)
    partial.replace(path)


def _metadata_json(rows: pa.Table, job: ExportJob, file_name_key: str) -> dict[str, object]:
    info = {
        "dataset_id": job.dataset_id,
        "export_task_id": job.id,
        "entity_type": job.entity_type,
        "entities_count": rows.num_rows,
        "created_at": job.created_at.isoformat(),
    }
    items = [_media_item(row, file_name_key) for row in rows.to_pylist()]
    return {"info": info, "media_items": items}


def _media_item(row: dict[str, Any], file_name_key: str) -> dict[str, object]:
    items: list[dict[str, object]] = []
    if row["caption"] is not None:
        items.append({"type": "caption", "value": row["caption"]})
    items.extend({"type": "label", "value": label} for label in row["labels"] or ())
    return {
        "media_id": row["media_id"],
        file_name_key: row[file_name_key],
        "file_path": row["media_uri"] or row[file_name_key],
        "cluster_id": row["cluster_id"],
        "uniqueness_score": row.get("uniqueness"),
        "width": row["width"],
        "height": row["height"],
        "metadata_items": items,
    }
