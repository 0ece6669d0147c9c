"""Export jobs of the local server: a ZIP of every matching media row, built as an asyncio task.

A job starts INIT with the number of matching rows, then goes IN_PROGRESS and COMPLETED (its
ZIP on disk under the server's work dir), or REJECTED at once when the rows exceed
`max_entities`, or FAILED when the build breaks (or when `fail` is set, for the client's tests).
The ZIP holds `metadata.parquet` or `metadata.json` (a JSON array of row objects).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import re
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["ExportJob", "ExportManager", "ExportStatus"]

ExportStatus = Literal["INIT", "IN_PROGRESS", "COMPLETED", "FAILED", "REJECTED"]
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(slots=True)
class ExportJob:
    """One export task's state, as `export_status` reports it."""

    id: str
    dataset_id: str
    export_format: Literal["parquet", "json"]
    file_name: str
    entities_count: int
    created_at: dt.datetime
    status: ExportStatus = "INIT"
    progress: int = 0
    result_message: str | None = None
    zip_path: Path | None = None
    notes: list[str] = field(default_factory=list)

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
        self, workdir: Path, *, max_entities: int, fail: bool = False, delay_s: float = 0.0
    ) -> None:
        self._workdir = workdir
        self._max_entities = max_entities
        self._fail = fail
        self._delay_s = delay_s
        self._jobs: dict[str, ExportJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, task_id: str) -> ExportJob | None:
        """The job with this id, or None."""
        return self._jobs.get(task_id)

    def start(
        self,
        rows: pa.Table,
        *,
        dataset_id: str,
        export_format: Literal["parquet", "json"],
        file_name: str | None,
        include_images: bool,
    ) -> ExportJob:
        """Register a job for `rows` and start building its ZIP (unless it is rejected)."""
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
        )
        if include_images:
            job.notes.append("images are not stored on this server: the ZIP holds metadata only")
        self._jobs[task_id] = job
        if rows.num_rows > self._max_entities:
            job.status = "REJECTED"
            job.result_message = (
                f"Export of {rows.num_rows} entities exceeds the maximum of {self._max_entities}; "
                "narrow the filters"
            )
            return job
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
        job.status, job.progress = "IN_PROGRESS", 10
        try:
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            if self._fail:
                raise RuntimeError("injected export failure (export_fail is set)")
            path = self._workdir / f"{job.id}.zip"
            await asyncio.to_thread(_write_zip, path, rows, job.export_format)
        except asyncio.CancelledError:
            job.status, job.result_message = "FAILED", "export cancelled: the server stopped"
            raise
        except Exception as exc:  # noqa: BLE001 - a job reports any failure as FAILED
            job.status, job.result_message = "FAILED", f"Export failed: {exc}"
            return
        job.zip_path, job.status, job.progress = path, "COMPLETED", 100
        job.result_message = "; ".join(job.notes) or None


def _write_zip(path: Path, rows: pa.Table, export_format: Literal["parquet", "json"]) -> None:
    """Write the ZIP next to its final name and rename it, so a reader never sees half a file."""
    if export_format == "parquet":
        buffer = io.BytesIO()
        pq.write_table(rows, buffer)
        member, data = "metadata.parquet", buffer.getvalue()
    else:
        member, data = "metadata.json", orjson.dumps(rows.to_pylist(), default=str)
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, data)
    partial.replace(path)
