"""The Explore API's answers beside search, read into typed records (tolerant of the variants).

`parse_dataset` (`/dataset/{id}`), `parse_context` (`/enrichment/{id}/context`),
`parse_export_task` (`export_context_async` and `export_status`), and `detail_text`, the one-line
rendering of an error body's `detail`. Each parser raises
`ValueError` for a body it cannot read; the client turns that into `BadBody`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import orjson

from runner.api.pages import mapping, opt_float, opt_int, opt_text, text

__all__ = [
    "DatasetStatus",
    "EXPORT_TERMINAL",
    "EnrichmentContext",
    "ExportTask",
    "detail_text",
    "parse_export_task",
    "parse_context",
    "parse_dataset",
]

# Longest error detail kept in a message; server details can echo whole inputs.
MAX_DETAIL_CHARS: Final = 300
# The states in which an export job is over. CANCELLED is read as CANCELED; "ERROR" stands for a
# 200 whose body carries "error" (the hosted API's way to say "exceeds threshold", for one).
EXPORT_TERMINAL: Final = frozenset({"COMPLETED", "FAILED", "REJECTED", "CANCELED", "ERROR"})
_EXPORT_SPELLINGS: Final = {"CANCELLED": "CANCELED"}


@dataclass(frozen=True, slots=True)
class DatasetStatus:
    """What `/dataset/{id}` says: searching needs `status == "READY"`."""

    dataset_id: str
    display_name: str | None
    status: str
    n_images: int | None


@dataclass(frozen=True, slots=True)
class EnrichmentContext:
    """What `/enrichment/{id}/context` says: the enrichment models applied, by type."""

    status: str | None
    models: Mapping[str, str]

    @property
    def enrichments(self) -> frozenset[str]:
        """The enrichment types available, e.g. CAPTION_IMAGES, IMAGE_TAGGING."""
        return frozenset(self.models)


def parse_dataset(body: bytes, dataset_id: str) -> DatasetStatus:
    root = mapping(orjson.loads(body), "body")
    status = root.get("status_new", root.get("status"))
    if status is None:
        raise ValueError("dataset has no status_new")
    return DatasetStatus(
        dataset_id=text(root.get("id", dataset_id), "id"),
        display_name=opt_text(root.get("display_name")),
        status=text(status, "status_new"),
        n_images=opt_int(root.get("n_images"), "n_images"),
    )


def parse_context(body: bytes) -> EnrichmentContext:
    root = mapping(orjson.loads(body), "body")
    outer = root.get("dataset_enrichment_models") or {}
    models = mapping(outer, "dataset_enrichment_models").get("enrichment_models") or {}
    return EnrichmentContext(
        status=opt_text(root.get("status")),
        models={str(k): str(v) for k, v in mapping(models, "enrichment_models").items()},
    )


@dataclass(frozen=True, slots=True)
class ExportTask:
    """An export job as the API describes it, at the start or while polling.

    Every field may be missing: the start answer may be `{"id"}` alone. `status` is upper case,
    CANCELLED spelled CANCELED, and "ERROR" when the body carried `"error"` (then `message` is
    it); `progress` is a float whatever the API sent.
    """

    task_id: str | None
    status: str | None
    progress: float | None = None
    download_uri: str | None = None
    message: str | None = None
    entities_count: int | None = None

    @property
    def finished(self) -> bool:
        """Whether the job is over (completed, failed, rejected, cancelled or in error)."""
        return self.status in EXPORT_TERMINAL


def parse_export_task(body: bytes) -> ExportTask:
    """An `export_context_async` or `export_status` answer (`ValueError` if not an object)."""
    root = mapping(orjson.loads(body), "body")
    task_id = next((root[k] for k in ("id", "task_id", "export_task_id") if root.get(k)), None)
    status = opt_text(root.get("status"))
    if status is not None:
        status = status.strip().upper()
        status = _EXPORT_SPELLINGS.get(status, status)
    message = opt_text(root.get("result_message"))
    error = root.get("error")
    if error not in (None, "", False):
        status, message = "ERROR", detail_text(error)
    return ExportTask(
        task_id=None if task_id is None else text(task_id, "id"),
        status=status,
        progress=opt_float(root.get("progress"), "progress"),
        download_uri=opt_text(root.get("download_uri")) or None,
        message=message or None,
        entities_count=_lenient_int(root.get("entities_count")),
    )


def _lenient_int(value: object) -> int | None:
    """A count the API may send as a number, a numeric string or not at all; None if unreadable."""
    try:
        return opt_int(value, "count")
    except ValueError:
        return None


def detail_text(detail: object) -> str:
    """A one-line rendering of an error body's `detail` (a string, or a 422 list of issues)."""
    if isinstance(detail, list):
        parts = []
        for issue in detail:
            if isinstance(issue, dict):
                loc = ".".join(str(p) for p in issue.get("loc") or [])
                parts.append(f"{loc}: {issue.get('msg', '')}" if loc else str(issue.get("msg", "")))
            else:
                parts.append(str(issue))
        line = "; ".join(parts)
    else:
        line = str(detail)
    line = " ".join(line.split())
    return line if len(line) <= MAX_DETAIL_CHARS else line[:MAX_DETAIL_CHARS] + "…"
