"""The run directory: a crash-safe streaming writer, the manifest, the one reader, the one write.

Writing a run (the scheduler): `RunWriter.create(...)` or `RunWriter.resume(run_dir, ...)` (with
`retry_failed=True`: failed keys withdrawn, to be sent again), then
`record(request_rows, hit_rows)` once per completed request unit, then `finish(status)`.
Reading a run (everyone), from a path or an `s3://`/`gs://` URI (`reader`): `open_run`,
`read_manifest`, `scan_requests`, `scan_hits`, `scan_judgments`, `find_run_locations`,
`find_runs`, `latest_run`. Rewriting a run's manifest: `write_manifest`. Writing any other
file: `atomic.atomic_write` / `atomic_path`.
Elsewhere in the room: `location` (where a run is), `push` (copy a run to a bucket), `merge`
(shards into one run), `labels_log` (the suite's judgments log as a file, carried with push).
Layout: `run_dir_for`, `new_run_id`. Columns: `runner.schema`.
"""

from runner.store._layout import new_run_id, run_dir_for, safe_suite_name
from runner.store._manifest import RunCounts, parse_manifest, public_base_url, write_manifest
from runner.store._rows import Rows
from runner.store._writer import DEFAULT_ROLL_ROWS, FINISH_STATUSES, Recovery, RunWriter
from runner.store.atomic import atomic_path, atomic_write
from runner.store.location import Location, is_remote, resolve
from runner.store.reader import (
    RunInfo,
    RunRef,
    check_parquet,
    find_run_locations,
    find_runs,
    latest_run,
    open_run,
    read_manifest,
    scan_hits,
    scan_judgments,
    scan_requests,
    scan_table,
)

__all__ = [
    "DEFAULT_ROLL_ROWS",
    "FINISH_STATUSES",
    "Location",
    "Recovery",
    "Rows",
    "RunCounts",
    "RunInfo",
    "RunRef",
    "RunWriter",
    "atomic_path",
    "atomic_write",
    "check_parquet",
    "find_run_locations",
    "find_runs",
    "is_remote",
    "latest_run",
    "new_run_id",
    "open_run",
    "parse_manifest",
    "public_base_url",
    "read_manifest",
    "resolve",
    "run_dir_for",
    "safe_suite_name",
    "scan_hits",
    "scan_judgments",
    "scan_requests",
    "scan_table",
    "write_manifest",
]
