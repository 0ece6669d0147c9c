"""`manifest.json`: what a run is (suite, dataset, tool) and how far it got; written atomically."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import orjson

from runner.errors import RunError
from runner.schema import MANIFEST_FILE, RUN_STATUSES
from runner.store.atomic import atomic_write_bytes

__all__ = [
    "RunCounts",
    "new_manifest",
    "parse_manifest",
    "public_base_url",
    "read_manifest",
    "utc_now_iso",
    "write_manifest",
]

_REQUIRED: Final = ("run_id", "suite_name", "suite_hash", "status", "started_at", "counts")


@dataclass(frozen=True, slots=True)
class RunCounts:
    """How far a run got.

    `requests_done` counts request units recorded (a unit is one request key with all its pages,
    whatever its outcome); `requests_failed` those of them with a page whose outcome is not `ok`;
    `pages` the rows of requests.parquet; `hits` the rows of hits.parquet.
    """

    requests_planned: int = 0
    requests_done: int = 0
    requests_failed: int = 0
    pages: int = 0
    hits: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, counts: object, *, where: Path | str) -> RunCounts:
        if not isinstance(counts, dict):
            raise RunError(f"{where}: counts is not an object")
        try:
            return cls(**{k: int(counts.get(k, 0)) for k in cls.__slots__})
        except (TypeError, ValueError):
            raise RunError(f"{where}: counts holds a value that is not an integer") from None


def utc_now_iso() -> str:
    """Now, as the manifests spell a time: ISO 8601 in UTC to the millisecond."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def public_base_url(url: str | None) -> str | None:
    """`url` without user info, query or fragment, so that no credential reaches the manifest."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    if ":" in host:  # IPv6 literal
        netloc = f"[{host}]:{parts.port}" if parts.port else f"[{host}]"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Replace `run_dir/manifest.json` atomically (temp file, fsync, rename, fsync of the dir)."""
    if manifest.get("status") not in RUN_STATUSES:
        raise RunError(f"{run_dir}: status {manifest.get('status')!r} is not one of {RUN_STATUSES}")
    atomic_write_bytes(run_dir / MANIFEST_FILE, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def read_manifest(run_dir: Path | str) -> dict[str, Any]:
    """The manifest of the run in `run_dir`, checked for the keys every reader relies on.

    Raises `RunError` naming the path for a missing directory, a directory with no manifest
    (not a run), a manifest that is not JSON, or one missing a required key or with an unknown
    status. A run still `running` is returned as it is: the caller decides.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    path = run_dir / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{run_dir}: not a run directory (no {MANIFEST_FILE})") from None
    return parse_manifest(raw, where=str(path))


def parse_manifest(raw: bytes, *, where: str) -> dict[str, Any]:
    """A manifest's bytes, checked for the keys every reader relies on; `where` names it in errors.

    Shared by local runs and runs on object storage, so both refuse the same corrupt manifests.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RunError(f"{where}: corrupt manifest, not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RunError(f"{where}: corrupt manifest, not a JSON object")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise RunError(f"{where}: corrupt manifest, missing {', '.join(missing)}")
    if data["status"] not in RUN_STATUSES:
        raise RunError(
            f"{where}: unknown status {data['status']!r} (expected one of {RUN_STATUSES})"
        )
    RunCounts.from_dict(data["counts"], where=where)
    return data


def new_manifest(
    run_dir: Path,
    *,
    run_id: str,
    suite_name: str,
    suite_hash: str,
    tool_version: str,
    base_url: str | None,
    dataset_id: str | None,
    started: dt.datetime,
    requests_planned: int,
    modes: Any,
    sweep: Any,
    shard: str | None,
    dataset_status: str | None,
    dataset_caveat: str | None,
    fusions: Any,
) -> dict[str, Any]:
    """The manifest a new run starts with (status `running`; see `RunWriter.create`).

    Raises `RunError` naming `run_dir` when a value given is not JSON-able.
    """
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "suite_name": suite_name,
        "suite_hash": suite_hash,
        "tool_version": tool_version,
        "base_url": public_base_url(base_url),
        "dataset_id": dataset_id,
        "started_at": started.isoformat(timespec="milliseconds"),
        "ended_at": None,
        "status": "running",
        "counts": RunCounts(requests_planned=requests_planned).to_dict(),
        "modes": modes,
        "sweep": sweep,
        "shard": shard,
        "resumed_at": [],
        "dataset_status": dataset_status,
        "dataset_caveat": dataset_caveat,
    }
    if fusions:  # the suite's fusions, for the report (runner.evaluate.fusion)
        manifest["fusions"] = fusions
    try:
        orjson.dumps(manifest)
    except TypeError as exc:
        raise RunError(f"{run_dir}: manifest values must be JSON-able: {exc}") from None
    return manifest
