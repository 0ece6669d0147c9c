"""Runs on object storage: `s3://` and `gs://` locations (and local paths) through `pyarrow.fs`.

    loc = resolve("s3://nightly/vlbench")           # a Location: file system + path
    push_run("reports/suite=demo/run_date=2024-11-24/run_id=...", "s3://nightly/vlbench")
    manifest = read_run_manifest("s3://nightly/vlbench/suite=demo/run_date=.../run_id=...")
    hits = scan_run_table("s3://.../run_id=...", "hits")   # a polars LazyFrame, read in batches

Runs keep their hive layout on the bucket (`<prefix>/suite=<name>/run_date=<date>/run_id=<id>/`),
so `vlbench export` and `vlbench history` read them in place, and so do DuckDB, Spark or Trino.

Configuration comes from the environment, as the AWS and Google tools read it:
- S3: `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`; e.g. `http://127.0.0.1:9000` for MinIO or
  moto: its scheme decides http or https), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
  `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`). Without them, the AWS SDK's own
  chain (config files, instance roles) applies.
- GCS: `STORAGE_EMULATOR_HOST` for an emulator (anonymous); otherwise Google's default
  credentials. (Only S3 is tested here, against a local moto server.)

Writing is per file and honest about what object stores give: each object appears whole or not
at all (an S3 PUT is atomic), and `push_run` uploads the manifest LAST, so a reader that finds a
run's manifest finds all of its files. Credentials never appear in a message or a repr.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from runner.errors import RunError
from runner.schema import (
    HITS_FILE,
    HITS_SCHEMA,
    JUDGMENTS_FILE,
    JUDGMENTS_SCHEMA,
    MANIFEST_FILE,
    REQUESTS_FILE,
    REQUESTS_SCHEMA,
)
from runner.store import (
    check_parquet,
    open_run,
    parse_manifest,
    read_manifest,
    scan_hits,
    scan_judgments,
    scan_requests,
)
from runner.store.location import REMOTE_SCHEMES, Location, is_remote, resolve, scrub

__all__ = [
    "REMOTE_SCHEMES",
    "Location",
    "PushResult",
    "find_run_locations",
    "is_remote",
    "push_run",
    "read_run_manifest",
    "resolve",
    "scan_run_table",
]

Table = Literal["hits", "requests", "judgments"]
_TABLES: Final[Mapping[str, tuple[str, pa.Schema]]] = {
    "hits": (HITS_FILE, HITS_SCHEMA),
    "requests": (REQUESTS_FILE, REQUESTS_SCHEMA),
    "judgments": (JUDGMENTS_FILE, JUDGMENTS_SCHEMA),
}
_HIVE_RUN: Final = re.compile(r"(?:^|/)(suite=[^/]+)/(run_date=[^/]+)/(run_id=[^/]+)/?$")
_COPY_CHUNK: Final = 8 * 1024 * 1024


# -- reading runs -------------------------------------------------------------------------------


def read_run_manifest(
    run: str | os.PathLike[str], *, allow_running: bool = False
) -> dict[str, Any]:
    """The manifest of the run at `run` (a path or a URI), refusing a `running` run by default.

    Local runs are read by `runner.store` (the same checks); remote ones are checked for the
    keys every reader relies on. Raises `RunError` naming the location.
    """
    if not is_remote(run):
        return open_run(Path(run), allow_running=allow_running).manifest  # type: ignore[return-value]
    loc = resolve(run)
    if not loc.exists():
        raise RunError(f"{loc.uri}: no such run")
    manifest_loc = loc.child(MANIFEST_FILE)
    if not manifest_loc.is_file():
        raise RunError(f"{loc.uri}: not a run directory (no {MANIFEST_FILE})")
    data = parse_manifest(manifest_loc.read_bytes(), where=manifest_loc.uri)
    if data["status"] == "running" and not allow_running:
        raise RunError(
            f"{loc.uri}: run is still running (started {data['started_at']}); wait for it to finish"
        )
    return data


def scan_run_table(run: str | os.PathLike[str], table: Table) -> pl.LazyFrame:
    """One Parquet file of a finished run (`hits`, `requests`, `judgments`) as a LazyFrame.

    Local runs go through `runner.store`'s readers; remote ones through a `pyarrow.dataset`
    scanned in record batches (nothing is downloaded whole). Refuses a running run, a missing
    or corrupt file, or columns that differ from `runner/schema.py` (`RunError`).
    """
    if not is_remote(run):
        scanner = {"hits": scan_hits, "requests": scan_requests, "judgments": scan_judgments}
        return scanner[table](Path(run))
    read_run_manifest(run)
    file, schema = _TABLES[table]
    loc = resolve(run).child(file)
    check_remote_parquet(loc, schema)
    dataset = ds.dataset(loc.path, filesystem=loc.fs, format="parquet")
    return pl.scan_pyarrow_dataset(dataset)


def check_remote_parquet(loc: Location, schema: pa.Schema) -> None:
    """Refuse a missing or corrupt Parquet file at `loc`, or one whose columns differ."""
    try:
        check_parquet(loc.path, schema, filesystem=loc.fs, where=loc.uri)
    except RunError as exc:  # object-store errors may quote request signatures: scrub them
        raise RunError(scrub(str(exc))) from None


def find_run_locations(
    root: str | os.PathLike[str] | Location, suite: str | None = None
) -> list[Location]:
    """The run directories under `root` (a root or one `suite=<name>` directory), oldest first.

    Works for local paths and URIs alike; a run is a `suite=*/run_date=*/run_id=*/` directory
    holding a manifest. Ordered by run date, then run id. Raises `RunError` if `root` is not there.
    """
    loc = root if isinstance(root, Location) else resolve(root)
    info = loc.fs.get_file_info(loc.path)
    if info.type != pafs.FileType.Directory:
        # Object stores have no directories: a prefix "exists" when something is below it.
        if not loc.remote or not loc.fs.get_file_info(pafs.FileSelector(loc.path, True, False)):
            raise RunError(f"{loc.uri}: no such directory")
    base = loc.path.rstrip("/")
    runs = []
    for entry in loc.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if not entry.path.endswith("/" + MANIFEST_FILE):
            continue
        run_path = entry.path[: -len(MANIFEST_FILE) - 1]
        match = _HIVE_RUN.search(run_path)
        if match is None or not run_path.startswith(base):
            continue
        suite_part = match.group(1)
        if suite is not None and suite_part != f"suite={suite}":
            continue
        rel = run_path[len(base) :].strip("/")
        depth = rel.count("/") + 1
        if depth not in (2, 3):  # below a suite dir, or below a root
            continue
        runs.append(loc.child(rel))
    return sorted(runs, key=lambda r: (r.path.split("/")[-2], r.path.split("/")[-1], r.path))


# -- writing runs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushResult:
    """Where a pushed run now lives, and what was copied."""

    uri: str
    files: tuple[str, ...]
    bytes: int


def push_run(
    run_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    environ: Mapping[str, str] | None = None,
) -> PushResult:
    """Copy a finished local run to `dest` (a root: `s3://bucket/prefix`, `gs://...` or a path).

    The run lands at `dest/suite=<name>/run_date=<date>/run_id=<id>/`. Every top-level file of
    the run is copied (Parquet, manifest, metrics, reports; never `_journal`/`_parts` or hidden
    temp files), each file whole (object stores show an object once its upload completes; a
    local destination gets a temp file and a rename), the manifest LAST: a reader that finds
    the manifest finds every file. A run still `running`, or one already at `dest` (unless
    `overwrite`), is refused with `RunError`; nothing is written then.
    """
    info = open_run(Path(run_dir))  # refuses a running run, names a missing one
    rel = _hive_rel(info.path, info.manifest)
    target = resolve(dest, environ=environ).child(rel)
    if target.child(MANIFEST_FILE).exists() and not overwrite:
        raise RunError(f"{target.uri}: a run is already there (pass --overwrite to replace it)")
    files = sorted(
        p
        for p in info.path.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and p.name != MANIFEST_FILE
    )
    files.append(info.path / MANIFEST_FILE)
    read_manifest(info.path)  # the manifest we copy last must still be a good one
    if not target.remote:
        target.fs.create_dir(target.path, recursive=True)
    total = 0
    for file in files:
        total += _upload(file, target.child(file.name))
    return PushResult(target.uri, tuple(f.name for f in files), total)


def _hive_rel(run_dir: Path, manifest: Mapping[str, Any]) -> str:
    """`suite=<s>/run_date=<d>/run_id=<id>` of a local run (its own folders, else its manifest)."""
    match = _HIVE_RUN.search(run_dir.as_posix())
    if match is not None:
        return "/".join(match.groups())
    from runner.store import run_dir_for

    date = str(manifest["started_at"])[:10]
    return run_dir_for(
        Path("."), str(manifest["suite_name"]), date, str(manifest["run_id"])
    ).as_posix()


def _upload(source: Path, target: Location) -> int:
    """Copy one file; a local target is written under a temp name and renamed."""
    dest_path = target.path
    if not target.remote:
        name = dest_path.rsplit("/", 1)[-1]
        dest_path = f"{dest_path.rsplit('/', 1)[0]}/.{name}.tmp-{secrets.token_hex(4)}"
    copied = 0
    try:
        with open(source, "rb") as src, target.fs.open_output_stream(dest_path) as out:
            while chunk := src.read(_COPY_CHUNK):
                out.write(chunk)
                copied += len(chunk)
        if dest_path != target.path:
            target.fs.move(dest_path, target.path)
    except (OSError, pa.ArrowException) as exc:
        if dest_path != target.path:
            _remove_quietly(target.fs, dest_path)
        raise RunError(f"{target.uri}: upload failed ({scrub(str(exc))})") from None
    return copied


def _remove_quietly(fs: Any, path: str) -> None:
    try:
        fs.delete_file(path)
    except (OSError, pa.ArrowException):
        pass  # nothing was created, or it is gone already
