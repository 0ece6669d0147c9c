"""The one atomic write: a reader sees the old file or the new one, never a mixture.

    with atomic_write(run_dir / "report.md") as f:      # a binary file object
        f.write(text.encode())
    with atomic_path(run_dir / "metrics.parquet") as tmp:  # a path, for writers that want one
        frame.write_parquet(tmp)

Locally: a hidden temp name in the target's folder (`.<name>.tmp-<hex>`, never `.parquet`, so
hive readers skip it), write, flush and fsync, `os.replace`, fsync the folder. On object storage
(a `Location`): write the object under a temp key, then move it over the target (each PUT is
whole or absent; the move keeps a reader of the target from seeing a half-copied object where
the store copies). Whatever fails, the temp file is removed and a `WriteError` names the target
and the cause in the system's words ("no space left on device"); the old file is left as it was.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

import pyarrow as pa

from runner.errors import WriteError
from runner.store.location import Location, scrub

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "fsync_dir",
    "fsync_file",
    "temp_path",
    "write_error",
]

# Writers that wrap an OS failure report it as text: "... (os error 28)" (polars, Rust) or
# "[Errno 28] ..." (a Python file object inside a C++ writer).
_OS_ERROR_TEXT = re.compile(r"(?:os error|Errno) (\d+)")


def temp_path(path: Path) -> Path:
    """A unique hidden sibling of `path` to write before `os.replace`; never ends in `.parquet`."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")


def fsync_dir(path: Path) -> None:
    """Make a rename or an unlink inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make a file's bytes durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_error(target: object, exc: BaseException) -> WriteError:
    """A `WriteError` for `target` whose message says the cause in the system's words."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        match = _OS_ERROR_TEXT.search(str(exc))
        code = int(match.group(1)) if match else None
    cause = os.strerror(code).lower() if code else scrub(str(exc))
    return WriteError(f"{target}: cannot write: {cause}", path=str(target), errno=code)


@contextmanager
def atomic_path(target: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `target`; when the block ends without error, it becomes `target`.

    For writers that take a path (polars, pyarrow, DuckDB). The caller writes and closes the file
    inside the block; this fsyncs it, renames it and fsyncs the folder. Raises `WriteError`.
    `durable=False` leaves out the fsyncs, for state that need not outlive a power cut (the
    local server's export jobs, in a temporary folder): still whole or absent to every reader.
    """
    path = Path(target)
    tmp = temp_path(path)
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (KeyboardInterrupt, SystemExit, WriteError)):
            raise
        if isinstance(exc, OSError) or _OS_ERROR_TEXT.search(str(exc)):
            raise write_error(path, exc) from exc
        raise


@contextmanager
def atomic_write(
    target: str | os.PathLike[str] | Location, *, durable: bool = True
) -> Iterator[IO[bytes]]:
    """Yield a binary file; when the block ends without error, its bytes replace `target`.

    `target` is a local path or a `Location` (object storage or local, see `store.location`).
    Raises `WriteError` naming `target` and the cause; the temp file is gone either way.
    `durable` as in `atomic_path` (object storage is durable either way).
    """
    if isinstance(target, Location) and target.remote:
        with _remote_write(target) as out:
            yield out
        return
    path = Path(target.path) if isinstance(target, Location) else Path(target)
    with atomic_path(path, durable=durable) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()


def atomic_write_bytes(
    target: str | os.PathLike[str] | Location, data: bytes, *, durable: bool = True
) -> None:
    """Replace `target` with `data` atomically (see `atomic_write`)."""
    with atomic_write(target, durable=durable) as f:
        f.write(data)


@contextmanager
def _remote_write(target: Location) -> Iterator[IO[bytes]]:
    parent, name = target.path.rsplit("/", 1)
    tmp = f"{parent}/.{name}.tmp-{secrets.token_hex(4)}"
    try:
        with target.fs.open_output_stream(tmp) as out:
            yield cast(IO[bytes], out)
        target.fs.move(tmp, target.path)
    except BaseException as exc:
        try:
            target.fs.delete_file(tmp)
        except (OSError, pa.ArrowException):
            pass  # never created, or already moved
        if isinstance(exc, (OSError, pa.ArrowException)):
            error = write_error(target.uri, exc)
            raise WriteError(scrub(str(error)), path=target.uri, errno=error.errno) from None
        raise
