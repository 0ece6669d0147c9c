"""The judgments store: labels given in `vlbench judge`, appended as they are given.

Where: beside the suite, in the hive tree of its runs: `reports/suite=<name>/_judgments/` for a
run in `reports/suite=<name>/run_date=.../run_id=.../` (a name that starts with `_`, so hive
readers of `suite=*/run_date=*/...` pass it by), so every night of the suite shares the labels.
A run outside a `suite=` directory keeps its own store in `<run>/_judgments/`.

What (one file is the truth, the others are derived from it):
- `labels.jsonl`: the append-only log, one JSON object a line: `time`, `rater`, `op` ("grade",
  or "undo": take back that rater's latest grade still standing), `run_id`, `query_id`,
  `media_id`, `grade`, `best_rank` and `ranks` (`[{mode, rank}]`, best in each mode). Each line is
  one `write` on an `O_APPEND` descriptor under a lock, followed by `fsync`, so a crash loses at
  most the label being given, and several raters (processes) append to one log without
  interleaving. A line torn by a crash (the last one, without its newline) is ignored when read
  and cut off before the next append (`runner.store.labels_log`, which also carries the log to
  and from object storage with the runs).
- `labels.parquet`: the same log as Parquet (rater, time, rank, ...), for DuckDB or Polars.
  Parquet cannot be appended to, so it is rewritten from the log (atomically) when a judging
  session closes, rather than written in small parts that a crash could leave half-made.
- `qrels/<rater>.qrels`: each rater's standing grades as TREC qrels, and `judgments.qrels`:
  the consensus (below), both rewritten with `labels.parquet`.

The evaluation reads the log itself (`store_judgments`), so labels count in `vlbench report`
as soon as they are given, even when the session that gave them crashed before compacting.
Consensus of several raters on one (query, media): the lower median of their grades (an
ordinal scale has no mean; on a tie the more conservative grade).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson
import polars as pl

from runner.errors import RunError, UsageError
from runner.schema import JUDGMENTS_SCHEMA
from runner.store.atomic import atomic_write_bytes
from runner.store.labels_log import LOG_FILE, STORE_DIR, append_lines, store_dir

__all__ = [
    "GRADES",
    "LOG_FILE",
    "PARQUET_FILE",
    "STORE_DIR",
    "Label",
    "append_label",
    "check_grade",
    "check_rater",
    "compact",
    "consensus",
    "rater_stacks",
    "qrels_text",
    "read_log",
    "standing_labels",
    "store_dir",
    "store_judgments",
]

PARQUET_FILE: Final = "labels.parquet"
QRELS_DIR: Final = "qrels"
CONSENSUS_FILE: Final = "judgments.qrels"
# The scale: 0 not relevant, 1 marginally, 2 relevant, 3 highly relevant (the keys 0-3).
GRADES: Final = (0, 1, 2, 3)
GRADE_NAMES: Final = ("not relevant", "marginal", "relevant", "highly relevant")
SOURCE: Final = "vlbench judge"

_RATER: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LOG_SCHEMA: Final = pl.Schema(
    {  # type: ignore[arg-type]  # polars' stubs do not take a Struct in a dict literal
        "time": pl.Datetime("ms", "UTC"),
        "rater": pl.String,
        "op": pl.String,
        "run_id": pl.String,
        "query_id": pl.String,
        "media_id": pl.String,
        "grade": pl.Int32,
        "best_rank": pl.Int32,
        "ranks": pl.List(pl.Struct({"mode": pl.String, "rank": pl.Int32})),
    }
)
# As the log spells it: the time is ISO 8601 text, parsed after reading.
_JSON_SCHEMA: Final = pl.Schema(
    [(name, pl.String() if name == "time" else kind) for name, kind in _LOG_SCHEMA.items()]
)
STANDING_SCHEMA: Final = pl.Schema(
    {"rater": pl.String, "query_id": pl.String, "media_id": pl.String, "grade": pl.Int32}
)


@dataclass(frozen=True, slots=True)
class Label:
    """One line of the log: a grade given (or, with op "undo", the latest one taken back)."""

    rater: str
    query_id: str
    media_id: str
    grade: int | None
    op: str = "grade"
    run_id: str | None = None
    best_rank: int | None = None
    ranks: Mapping[str, int] = field(default_factory=dict)
    time: str = ""

    def to_json(self) -> bytes:
        stamp = self.time or dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        record = {
            "time": stamp,
            "rater": self.rater,
            "op": self.op,
            "run_id": self.run_id,
            "query_id": self.query_id,
            "media_id": self.media_id,
            "grade": self.grade,
            "best_rank": self.best_rank,
            "ranks": [{"mode": m, "rank": r} for m, r in sorted(self.ranks.items())],
        }
        return orjson.dumps(record) + b"\n"


def check_rater(name: str) -> str:
    """The rater's name if it is safe as a file name (it names `qrels/<rater>.qrels`)."""
    if not _RATER.match(name):
        raise UsageError(
            f"--rater: {name!r} is not a rater name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', no spaces: it names a file)"
        )
    return name


def check_grade(value: object) -> int:
    """A grade of the scale (0-3), or UsageError naming `grade`."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in GRADES:
        raise UsageError(
            f"grade: {value!r} is not on the scale: one of "
            + ", ".join(f"{g} ({n})" for g, n in zip(GRADES, GRADE_NAMES, strict=True))
        )
    return value


def append_label(store: Path, label: Label) -> None:
    """Append one label to the log: one write, then fsync, before this returns."""
    append_lines(store / LOG_FILE, label.to_json())


def _bad_line(path: Path, data: bytes) -> RunError:
    """The error naming the first line of `data` that is not a JSON object."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            ok = not line.strip() or isinstance(orjson.loads(line), dict)
        except orjson.JSONDecodeError:
            ok = False
        if not ok:
            return RunError(f"{path}:{number}: not a JSON object")
    return RunError(f"{path}: lines whose fields have the wrong types")


def read_log(store: Path) -> pl.DataFrame:
    """Every line of the log, in order (columns: time, rater, op, ..., ranks)."""
    path = store / LOG_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return pl.DataFrame(schema=_LOG_SCHEMA)
    except OSError as exc:
        raise RunError(f"{path}: cannot read the judgments log: {exc}") from exc
    # A last line without its newline was torn by a crash: the label being given, never answered.
    whole = data[: data.rfind(b"\n") + 1]
    if not whole.strip():
        return pl.DataFrame(schema=_LOG_SCHEMA)
    try:
        log = pl.read_ndjson(io.BytesIO(whole), schema=_JSON_SCHEMA)
    except pl.exceptions.PolarsError:
        raise _bad_line(path, whole) from None
    return log.with_columns(
        pl.col("time").str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="ms", time_zone="UTC")
    ).cast(_LOG_SCHEMA)


def rater_stacks(log: pl.DataFrame) -> dict[str, list[tuple[str, str, int]]]:
    """Each rater's grades (query_id, media_id, grade) still standing, in the order given.

    Replays the log: a grade is pushed on its rater's stack, an undo pops that rater's latest.
    """
    stacks: dict[str, list[tuple[str, str, int]]] = {}
    for rater, op, query_id, media_id, grade in log.select(
        "rater", "op", "query_id", "media_id", "grade"
    ).iter_rows():
        stack = stacks.setdefault(rater, [])
        if op == "undo":
            if stack:
                stack.pop()
        elif grade is not None:
            stack.append((query_id, media_id, grade))
    return stacks


def standing_labels(log: pl.DataFrame) -> pl.DataFrame:
    """Each rater's standing grade of each item: rater, query_id, media_id, grade.

    An item's standing grade is the latest one left on its rater's stack (`rater_stacks`), so
    undoing a re-grade brings the earlier grade back.
    """
    standing: dict[tuple[str, str, str], int] = {}
    for rater, stack in rater_stacks(log).items():
        for query_id, media_id, grade in stack:
            standing[(rater, query_id, media_id)] = grade
    return pl.DataFrame(
        [(*key, grade) for key, grade in sorted(standing.items())],
        schema=STANDING_SCHEMA,
        orient="row",
    )


def consensus(standing: pl.DataFrame) -> pl.DataFrame:
    """One grade per (query, media): the lower median of the raters' standing grades."""
    return (
        standing.group_by("query_id", "media_id")
        .agg(pl.col("grade").sort().get((pl.len() - 1) // 2).alias("grade"))
        .sort("query_id", "media_id")
    )


def store_judgments(run_dir: Path | str, *, rater: str | None = None) -> pl.DataFrame:
    """The store's labels as JUDGMENTS_SCHEMA rows (kind media_id): consensus, or one rater's."""
    standing = standing_labels(read_log(store_dir(run_dir)))
    if rater is not None:
        grades = standing.filter(pl.col("rater") == rater).drop("rater")
    else:
        grades = consensus(standing)
    return pl.DataFrame(
        {
            "query_id": grades["query_id"],
            "kind": ["media_id"] * grades.height,
            "value": grades["media_id"],
            "grade": grades["grade"],
            "source": [SOURCE if rater is None else f"{SOURCE}: {rater}"] * grades.height,
        },
        schema=pl.DataFrame(JUDGMENTS_SCHEMA.empty_table()).schema,
    )


def qrels_text(grades: pl.DataFrame) -> bytes:
    """Grades (`query_id, media_id, grade`) as the lines of a TREC qrels file."""
    lines = [f"{q} 0 {m} {g}" for q, m, g in grades.select("query_id", "media_id", "grade").rows()]
    return ("\n".join(lines) + "\n" if lines else "").encode()


def compact(store: Path) -> pl.DataFrame:
    """Rewrite `labels.parquet` and the qrels files from the log; return the standing labels."""
    log = read_log(store)
    standing = standing_labels(log)
    if log.is_empty():
        return standing
    temp = store / f".{PARQUET_FILE}.tmp"
    log.write_parquet(temp)
    os.replace(temp, store / PARQUET_FILE)
    (store / QRELS_DIR).mkdir(exist_ok=True)
    for (rater,), grades in standing.group_by("rater"):
        atomic_write_bytes(store / QRELS_DIR / f"{rater}.qrels", qrels_text(grades))
    atomic_write_bytes(store / CONSENSUS_FILE, qrels_text(consensus(standing)))
    return standing
