"""What an export can be asked for: its file formats and its groupings of hits.

    choose_format(None, "ids.parquet")   # "parquet": the output's suffix names it
    GROUPINGS["query-mode"]              # ("query_id", "mode"): the hit columns of a group

Apart from the export itself (`ids`, which needs polars and the reader), so that the CLI can
name them in `vlbench export --help` without importing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal, get_args

from runner.errors import UsageError

__all__ = ["FORMATS", "GROUPINGS", "ExportFormat", "choose_format"]

ExportFormat = Literal["csv", "jsonl", "parquet", "txt"]
FORMATS: Final = get_args(ExportFormat)

# group_by name -> the hit columns that make a group.
GROUPINGS: Final[Mapping[str, tuple[str, ...]]] = {
    "merged": (),
    "query": ("query_id",),
    "mode": ("mode",),
    "setting": ("mode", "setting"),
    "query-mode": ("query_id", "mode"),
    "query-setting": ("query_id", "mode", "setting"),
}
# An output file's suffix -> the format it implies when none is asked for.
_SUFFIXES: Final[Mapping[str, ExportFormat]] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".txt": "txt",
}


def choose_format(fmt: str | None, out: str) -> ExportFormat:
    """The asked format, else the one the output's suffix names, else txt for stdout ("-")."""
    chosen = fmt or (_SUFFIXES.get(Path(out).suffix.lower()) if out != "-" else "txt")
    if chosen is None:
        raise UsageError(f"--out {out}: say --format ({', '.join(FORMATS)})")
    if chosen not in FORMATS:
        raise UsageError(f"--format {chosen}: use one of {', '.join(FORMATS)}")
    return chosen  # type: ignore[return-value]  # checked against FORMATS above
