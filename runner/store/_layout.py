"""Where a run lives on disk: the run directory, its journal segments and Parquet parts.

A run directory is `root/suite=<name>/run_date=<YYYY-MM-DD>/run_id=<id>/` (hive style, so DuckDB,
Polars or Spark read months of runs in place). While a run is being written it also holds
`_journal/` (the write-ahead journal segments and the writer's lock) and `_parts/` (Parquet parts
rolled from the journal); both are gone once the run is finished. Names that start with `_` or
`.` are ignored by hive readers, and temporary files never end in `.parquet`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import secrets
from pathlib import Path
from typing import Final

from runner.errors import RunError
from runner.store.atomic import write_error

__all__ = [
    "FINALISE_FILE",
    "JOURNAL_DIR",
    "LOCK_FILE",
    "PARTS_DIR",
    "make_folders",
    "make_run_dir",
    "new_run_id",
    "part_path",
    "remove_folders",
    "run_dir_for",
    "safe_suite_name",
    "segment_path",
]

JOURNAL_DIR: Final = "_journal"
PARTS_DIR: Final = "_parts"
LOCK_FILE: Final = "LOCK"
# The manifest a finish intends to write; its presence means the finished Parquet files are
# complete on disk and supersede the parts and the journal (see RunWriter.finish).
FINALISE_FILE: Final = "_finalise.json"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def safe_suite_name(name: str) -> str:
    """Map a suite name onto a string safe as one path component and as a hive partition value.

    Runs of characters outside `A-Za-z0-9._-` become one `-`; leading and trailing `.` and `-`
    are dropped (no hidden directories, no `..`). The manifest keeps the real name.

    >>> safe_suite_name("Nightly / captions v2")
    'Nightly-captions-v2'
    """
    safe = _UNSAFE.sub("-", name).strip(".-")
    return safe or "suite"


def new_run_id(now: dt.datetime | None = None) -> str:
    """A run id that sorts by start time: UTC time to the millisecond, then 6 random hex digits.

    >>> new_run_id(dt.datetime(2024, 11, 24, 6, 18, 0, 123456, tzinfo=dt.UTC))[:19]
    '20241124T061800123Z'
    """
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def run_dir_for(root: Path | str, suite_name: str, run_date: dt.date | str, run_id: str) -> Path:
    """The directory of one run: `root/suite=<safe name>/run_date=<YYYY-MM-DD>/run_id=<id>`."""
    if not _RUN_ID.match(run_id):
        raise RunError(f"run id {run_id!r} is not safe as a directory name (use A-Z a-z 0-9 . _ -)")
    if isinstance(run_date, str):
        try:
            run_date = dt.date.fromisoformat(run_date)
        except ValueError:
            raise RunError(f"run date {run_date!r} is not a YYYY-MM-DD date") from None
    return (
        Path(root)
        / f"suite={safe_suite_name(suite_name)}"
        / f"run_date={run_date.isoformat()}"
        / f"run_id={run_id}"
    )


def segment_path(run_dir: Path, seq: int) -> Path:
    """Journal segment `seq` of a run being written."""
    return run_dir / JOURNAL_DIR / f"{seq:08d}.vlj"


def part_path(run_dir: Path, seq: int, table: str) -> Path:
    """Parquet part `seq` of `table` ("requests" or "hits") of a run being written."""
    return run_dir / PARTS_DIR / f"{seq:08d}-{table}.parquet"


def make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return those created, outermost first.

    A run that fails to start removes them again (`remove_folders`): a refused run leaves no
    empty `suite=`/`run_date=` folders behind. On an error here, what was made is removed.
    """
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        remove_folders(missing)
        raise
    return missing


def remove_folders(made: list[Path]) -> None:
    """Remove the folders `make_folders` made, innermost first, where they are still empty."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):  # not empty (another run's), or already gone
            folder.rmdir()


def make_run_dir(run_dir: Path) -> list[Path]:
    """Create the new `run_dir` and its missing parents; return the folders made, run_dir last.

    `RunError` if it exists; a `WriteError` (exit 1, not a traceback) if it cannot be made (a
    file in the way, a full disk), with no folder of it left behind.
    """
    made: list[Path] = []
    try:
        made = make_folders(run_dir.parent)
        run_dir.mkdir()
    except FileExistsError:
        raise RunError(f"{run_dir}: run directory exists already") from None
    except OSError as exc:
        remove_folders(made)
        raise write_error(exc.filename or run_dir, exc) from None
    return [*made, run_dir]
