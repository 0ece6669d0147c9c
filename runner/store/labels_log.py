"""The suite's judgments log as a file: where it lives, how it grows, how it travels with runs.

The log (`labels.jsonl`, one label given a line; what a line means is `runner.judge.labels`)
lives beside the suite's runs, `<root>/suite=<name>/_judgments/labels.jsonl`, so every night of
the suite shares it; a run outside a `suite=` folder keeps its own in `<run>/_judgments/`. It
only grows: a line is appended with one write and an fsync (`append_lines`). A line torn by a
crash (the last, without its newline) is no line: readers pass it by, and the next append cuts
it off (it was never acknowledged).

It travels with the runs, one way and the other, by the same step (`sync_log`): the complete
lines of one log that the other lacks are added to it, in their order, and nothing is removed.
- `vlbench push` adds the local log's lines to the one beside the pushed run
  (`<dest>/suite=<name>/_judgments/labels.jsonl`; an object store cannot append, so that file
  is rewritten whole, atomically, holding what it held plus the new lines), and that log's
  lines to the local one.
- Reading a run on object storage for an evaluation or a judging session adds that log's lines
  to the local store of the run's local folder (`reports/suite=<name>/...`), where the report
  and the judging page read them: a teammate's report of a pushed run counts the labels its
  rater gave. Closing a judging session of such a run adds the local lines to that log.
Two pushes at the same moment may each write the log they read plus their own lines: the lines
of one are then missing on the bucket, but stay in its local log and return with its next push.
A rater keeps their own order (an undo takes back that rater's latest grade) as long as they
label on one machine.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path, PurePath, PurePosixPath
from typing import Final

import orjson
import pyarrow as pa

from runner.errors import RunError
from runner.store.atomic import atomic_write_bytes
from runner.store.location import Location, resolve, scrub

__all__ = [
    "LOG_FILE",
    "STORE_DIR",
    "append_lines",
    "missing_lines",
    "pull_suite_log",
    "store_dir",
    "suite_log",
    "sync_log",
]

STORE_DIR: Final = "_judgments"
LOG_FILE: Final = "labels.jsonl"
_CHUNK: Final = 4096  # bytes read back at a time to find where a torn last line starts


def store_dir(run_dir: Path | str) -> Path:
    """The judgments store of a local run: beside its suite (see the module docstring)."""
    return Path(_store_folder(Path(run_dir))) / STORE_DIR


def suite_log(run: Location) -> Location:
    """The log beside the run at `run` (a path or object storage), where `store_dir` puts it."""
    path, uri = run.path.rstrip("/"), run.uri.rstrip("/")
    folder = str(_store_folder(PurePosixPath(path)))
    tail = len(path) - len(folder)  # the run's own folders end its path and its URI alike
    return Location(run.fs, folder, uri[: len(uri) - tail]).child(STORE_DIR, LOG_FILE)


def _store_folder(run: PurePath) -> PurePath:
    """The folder the store of `run` is in: its suite's for `suite=…/run_date=…/run_id=…`, else
    the run's own."""
    suite = run.parent.parent
    return suite if run.name.startswith("run_id=") and suite.name.startswith("suite=") else run


def append_lines(log: Path, lines: bytes) -> None:
    """Append whole lines to a local log: one write, then fsync, before this returns.

    Appenders (several raters' processes) take turns on an exclusive lock. A torn last line, left
    by a crash and never acknowledged, is cut off first: written after, the new lines would
    glue onto it and make one line that is not JSON, which spoils the whole log.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes
        _cut_torn_tail(fd)
        written = os.write(fd, lines)
        if written != len(lines):  # a full disk: say so rather than leave half a label
            raise OSError(f"short write to {log}: {written} of {len(lines)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut_torn_tail(fd: int) -> None:
    """Truncate the file after its last newline (nothing to do when it ends with one)."""
    end = os.fstat(fd).st_size
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return
    while end > 0:
        start = max(0, end - _CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def missing_lines(have: bytes, incoming: bytes) -> bytes:
    """The complete lines of `incoming` that `have` lacks, in their order, once each."""
    known = set(_lines(have))
    out: list[bytes] = []
    for line in _lines(incoming):
        if line not in known:
            known.add(line)
            out.append(line)
    return b"".join(out)


def sync_log(source: Location, target: Location) -> int:
    """Add the lines of the log at `source` that the one at `target` lacks; how many were added.

    A missing source adds nothing; a missing target is created. Raises `RunError` naming the
    log that cannot be read or holds a line that is not a JSON object (then nothing is added:
    one bad log does not spoil the other), `WriteError` the one that cannot be written.
    """
    current = _read(target)
    new = missing_lines(current, _read(source))
    if not new:
        return 0
    _check_objects(new, source)
    if target.remote:  # an object cannot be appended to: rewritten whole, torn line dropped
        atomic_write_bytes(target, b"".join(_lines(current)) + new)
    else:
        append_lines(Path(target.path), new)
    return new.count(b"\n")


def pull_suite_log(run: Location, local_run_dir: Path) -> int:
    """Add the log beside a run on object storage to the store of its local folder (`sync_log`)."""
    return sync_log(suite_log(run), resolve(store_dir(local_run_dir) / LOG_FILE))


def _check_objects(lines: bytes, source: Location) -> None:
    """`RunError` naming the first of `lines` that is not a JSON object, and its log."""
    for line in lines.splitlines():
        try:
            ok = isinstance(orjson.loads(line), dict)
        except orjson.JSONDecodeError:
            ok = False
        if not ok:
            start = line[:60].decode("utf-8", "replace")
            raise RunError(f"{source.uri}: a line is not a JSON object ({start!r}); nothing taken")


def _lines(data: bytes) -> list[bytes]:
    """The complete lines of a log, each with its newline (a torn last line is no line)."""
    whole = data[: data.rfind(b"\n") + 1]
    return [line + b"\n" for line in whole.split(b"\n")[:-1] if line.strip()]


def _read(log: Location) -> bytes:
    """The log's bytes; b"" when there is none (object stores say so in several ways)."""
    try:
        with log.fs.open_input_stream(log.path) as stream:
            return bytes(stream.read())
    except FileNotFoundError:
        return b""
    except (OSError, pa.ArrowException) as exc:
        error = scrub(str(exc))
    try:
        absent = not log.is_file()
    except (OSError, pa.ArrowException):
        absent = False
    if absent:
        return b""
    raise RunError(f"{log.uri}: cannot read the judgments log ({error})")
