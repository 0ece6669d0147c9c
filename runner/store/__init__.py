"""The run directory: a crash-safe streaming writer, the manifest, resume, and the readers.

Writing (the scheduler): `RunWriter.create(...)` or `RunWriter.resume(run_dir, suite_hash=...)`,
then `record(request_rows, hit_rows)` once per completed request unit, then `finish(status)`.
Reading (everyone): `open_run`, `read_manifest`, `scan_requests`, `scan_hits`, `scan_judgments`,
`find_runs`, `latest_run`. Layout: `run_dir_for`, `new_run_id`. Columns: `runner.schema`.
"""

from runner.store._layout import new_run_id, run_dir_for, safe_suite_name
from runner.store._manifest import RunCounts, parse_manifest, read_manifest
from runner.store._readers import (
    RunInfo,
    check_parquet,
    find_runs,
    latest_run,
    open_run,
    scan_hits,
    scan_judgments,
    scan_requests,
)
from runner.store._rows import Rows
from runner.store._writer import DEFAULT_ROLL_ROWS, FINISH_STATUSES, Recovery, RunWriter

__all__ = [
    "DEFAULT_ROLL_ROWS",
    "FINISH_STATUSES",
    "Recovery",
    "Rows",
    "RunCounts",
    "RunInfo",
    "RunWriter",
    "check_parquet",
    "find_runs",
    "latest_run",
    "new_run_id",
    "open_run",
    "parse_manifest",
    "read_manifest",
    "run_dir_for",
    "safe_suite_name",
    "scan_hits",
    "scan_judgments",
    "scan_requests",
]
