"""The Explore API's answers beside search, read into typed records (tolerant of the variants).

`parse_dataset` (`/dataset/{id}`: `status_new`, else the legacy `status` mapped onto it),
`parse_context` (`/enrichment/{id}/context`), `parse_user_config` (`/user_config`: which
features the account may use), `parse_export_task` (`export_context_async` and
`export_status`), and `detail_text`, the one-line rendering of an error body's `detail`.
Each parser raises `ValueError` for a body it cannot read; the client turns that into `BadBody`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import orjson

from runner.api.pages import mapping, opt_float, opt_int, opt_text, text

__all__ = [
    "EXPORT_TERMINAL",
    "SEARCHABLE",
    "DatasetStatus",
    "EnrichmentContext",
    "ExportTask",
    "FeatureFlags",
    "detail_text",
    "parse_context",
    "parse_dataset",
    "parse_export_task",
    "parse_user_config",
]

# Longest error detail kept in a message; server details can echo whole inputs.
MAX_DETAIL_CHARS: Final = 300
# The states in which an export job is over. CANCELLED is read as CANCELED; "ERROR" stands for a
# 200 whose body carries "error" (the hosted API's way to say "exceeds threshold", for one).
EXPORT_TERMINAL: Final = frozenset({"COMPLETED", "FAILED", "REJECTED", "CANCELED", "ERROR"})
_EXPORT_SPELLINGS: Final = {"CANCELLED": "CANCELED"}

# The dataset states in which search works. READ ONLY: browsing and search work, nothing changes;
# PARTIAL INDEX: new media are searchable but not yet re-clustered, so results may shift.
SEARCHABLE: Final = frozenset({"READY", "READ ONLY", "PARTIAL INDEX"})
_STATUS_NEW: Final = SEARCHABLE | {"DRAFT", "INDEXING", "ERROR"}
# The legacy `status` values, read as the `status_new` state they stand for.
_LEGACY_STATUS: Final = {
    "NEW": "DRAFT",
    "UPLOADING": "DRAFT",
    "INITIALIZING": "DRAFT",
    "SAVING": "INDEXING",
    "INDEXING": "INDEXING",
    "ENRICHING": "INDEXING",
    "READY": "READY",
    "READ ONLY": "READ ONLY",
    "PARTIAL INDEX": "PARTIAL INDEX",
    "ERROR": "ERROR",
    "FATAL ERROR": "ERROR",
    "FAILED": "ERROR",
}
_CAVEATS: Final = {
    "READ ONLY": (
        "the dataset is READ ONLY: search works while the service holds it read-only, "
        "so results may shift when it changes again"
    ),
    "PARTIAL INDEX": (
        "the dataset is PARTIAL INDEX: new media are searchable but not yet re-clustered, "
        "so results may shift"
    ),
}


@dataclass(frozen=True, slots=True)
class DatasetStatus:
    """What `/dataset/{id}` says: searching needs a `searchable` status.

    `status` is in the `status_new` vocabulary (DRAFT, INDEXING, READ ONLY, PARTIAL INDEX,
    READY, ERROR), or the value as sent, upper case, when it is in neither vocabulary.
    `reported` is what the API sent, and from which field (`status_new`, or the legacy `status`).
    """

    dataset_id: str
    display_name: str | None
    status: str
    n_images: int | None
    reported: str = ""

    @property
    def searchable(self) -> bool:
        return self.status in SEARCHABLE

    @property
    def caveat(self) -> str | None:
        """Why results may differ from a READY dataset's (READ ONLY, PARTIAL INDEX), or None."""
        return _CAVEATS.get(self.status)


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
    if root.get("status_new") is not None:
        field, value = "status_new", text(root["status_new"], "status_new")
        status = _spelling(value)
    elif root.get("status") is not None:
        field, value = "status", text(root["status"], "status")
        status = _LEGACY_STATUS.get(_spelling(value), _spelling(value))
    else:
        raise ValueError("dataset has neither status_new nor status")
    if field == "status_new" and status not in _STATUS_NEW:
        status = _LEGACY_STATUS.get(status, status)  # an old value in the new field
    return DatasetStatus(
        dataset_id=text(root.get("id", dataset_id), "id"),
        display_name=opt_text(root.get("display_name")),
        status=status,
        n_images=opt_int(root.get("n_images"), "n_images"),
        reported=f"{field} {value!r}",
    )


def _spelling(status: str) -> str:
    """READ_ONLY, read-only and "Read Only" all as READ ONLY."""
    return " ".join(re.split(r"[\s_-]+", status.strip().upper())).strip()


def parse_context(body: bytes) -> EnrichmentContext:
    root = mapping(orjson.loads(body), "body")
    outer = root.get("dataset_enrichment_models") or {}
    models = mapping(outer, "dataset_enrichment_models").get("enrichment_models") or {}
    return EnrichmentContext(
        status=opt_text(root.get("status")),
        models={str(k): str(v) for k, v in mapping(models, "enrichment_models").items()},
    )


@dataclass(frozen=True, slots=True)
class FeatureFlags:
    """What `/user_config` says the account may use: feature name -> enabled.

    Names are normalised to lower_snake_case (`Semantic Search` -> `semantic_search`). A feature
    the answer does not mention is taken as enabled: only an explicit "no" refuses a mode.
    """

    flags: Mapping[str, bool]

    def disabled(self, *names: str) -> str | None:
        """The first of `names` (any spelling) the answer says is disabled, or None."""
        for name in names:
            if self.flags.get(_feature_name(name)) is False:
                return _feature_name(name)
        return None


def parse_user_config(body: bytes) -> FeatureFlags:
    """The feature flags of a `/user_config` answer, whatever its nesting.

    Read: `{"semantic_search": false}`, `{"features": {"semantic_search": {"enabled": false}}}`,
    `{"features": [{"name": "semantic_search", "enabled": false}]}`, lists of enabled names
    (`{"enabled_features": [...]}`) or disabled names (`{"disabled_features": [...]}`), and
    "enabled" / "disabled" as strings. `ValueError` if the body is not a JSON object.
    """
    root = mapping(orjson.loads(body), "body")
    return FeatureFlags(dict(_flags(root, depth=0)))


_ON: Final = frozenset({"true", "enabled", "enable", "on", "yes", "active", "allowed"})
_OFF: Final = frozenset({"false", "disabled", "disable", "off", "no", "inactive", "denied"})
_SWITCH_KEYS: Final = ("enabled", "is_enabled", "value", "status", "allowed")
_NAME_KEYS: Final = ("name", "feature", "key", "id")


def _feature_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _switch(value: object) -> bool | None:
    """A flag's value: a bool, or a word such as "enabled"; None when it is not a switch."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _ON | _OFF:
        return value.strip().lower() in _ON
    if isinstance(value, dict):
        for key in _SWITCH_KEYS:
            if key in value and (found := _switch(value[key])) is not None:
                return found
    return None


def _flags(node: Mapping[str, object], depth: int) -> Iterator[tuple[str, bool]]:
    if depth > 4:  # deeper than any documented answer: not a flag
        return
    for key, value in node.items():
        name = _feature_name(str(key))
        if isinstance(value, list):
            yield from _listed(name, value)
            continue
        found = _switch(value)
        if found is not None and name not in _SWITCH_KEYS:
            yield name, found
        elif isinstance(value, dict):
            yield from _flags(value, depth + 1)


def _listed(key: str, items: list[object]) -> Iterator[tuple[str, bool]]:
    """A list under `key`: names (enabled, or disabled when the key says so) or flag objects."""
    for item in items:
        if isinstance(item, str):
            yield _feature_name(item), "disabled" not in key
        elif isinstance(item, dict):
            name = next((item[k] for k in _NAME_KEYS if isinstance(item.get(k), str)), None)
            found = _switch(item)
            if name is not None and found is not None:
                yield _feature_name(name), found


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
