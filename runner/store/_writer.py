"""`RunWriter`: records request units into a run directory, crash-safe and in bounded memory.

How a unit travels (each step survives a SIGKILL at any instant):

1. `record()` appends the unit as ONE checksummed frame to the current journal segment
   `_journal/<seq>.vlj` (one `os.write`, see `_journal`), then keeps its rows in memory.
2. When the rows in memory reach `roll_rows`, they are written as the Parquet part pair
   `_parts/<seq>-requests.parquet` + `_parts/<seq>-hits.parquet` (temp names, fsync, renamed
   requests first: the hits part's name is the commit), then segment `<seq>` is deleted and
   segment `<seq+1>` begun. A part pair and its segment hold the same units, so on resume a
   committed part makes its segment redundant, and a segment with no committed part is replayed.
3. `finish()` writes `requests.parquet` and `hits.parquet` to temp names from the previous
   final files (a resumed `partial` run), the parts and the rows in memory, row group by row group;
   then writes `_finalise.json` (the manifest it means to write), renames the temp files over the
   final names, deletes the parts and the journal, writes the manifest, and deletes
   `_finalise.json`. A crash after `_finalise.json` is rolled forward by `resume`; a crash before
   it leaves the previous state intact, and the temp files are deleted.
4. `resume(..., retry_failed=True)` withdraws the keys with a failed page before recording
   anything (one manifest write, see `_retry`): their old rows are dropped wherever they are read.

A unit is therefore in exactly one place (final files, a part, or a segment) whenever it is on
disk at all; rows are never deduplicated after the fact, and `record` refuses a request key that
was recorded before (and not withdrawn).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import orjson
import pyarrow as pa

from runner.errors import RunError
from runner.schema import JUDGMENTS_FILE, JUDGMENTS_SCHEMA
from runner.store import _files
from runner.store._journal import JournalSegment, Unit, encode_unit
from runner.store._layout import (
    FINALISE_FILE,
    JOURNAL_DIR,
    LOCK_FILE,
    PARTS_DIR,
    make_run_dir,
    new_run_id,
    part_path,
    remove_folders,
    run_dir_for,
    segment_path,
)
from runner.store._manifest import (
    RunCounts,
    new_manifest,
    read_manifest,
    utc_now_iso,
    write_manifest,
)
from runner.store._recovery import Recovery, check_resumable, failed_keys, recover
from runner.store._retry import BASE_SEQ, WITHDRAWN, Withdrawn
from runner.store._rows import Rows, checked_unit, to_batch
from runner.store.atomic import atomic_write_bytes, fsync_dir, temp_path, write_error
from runner.store.reader import RunInfo, open_run

__all__ = ["DEFAULT_ROLL_ROWS", "FINISH_STATUSES", "Recovery", "RunWriter"]

DEFAULT_ROLL_ROWS: Final = 50_000
FINISH_STATUSES: Final = ("complete", "partial", "failed")


class RunWriter:
    """Writes one run directory: units in, Parquet and a manifest out.

        writer = RunWriter.create("reports", suite_name=..., suite_hash=..., ...)
        # or: writer = RunWriter.resume(run_dir, suite_hash=...)
        skip = writer.completed_keys()
        for each request key not in skip, once all its pages are done:
            writer.record(request_rows, hit_rows)   # one unit, atomic against a crash
        info = writer.finish("complete")            # or "partial" on Ctrl-C, "failed"

    `record` and `finish` are thread-safe and synchronous; a call takes one `write` (plus, every
    `roll_rows` rows, the writing of a Parquet part: tens of milliseconds). Only one process can
    hold a run: a second `resume` of a run being written raises `RunError`. As a context manager,
    a writer left unfinished is finished `partial` (or `failed` if an exception other than
    KeyboardInterrupt or cancellation escaped).
    """

    def __init__(
        self,
        run_dir: Path,
        manifest: dict[str, Any],
        lock_fd: int,
        *,
        roll_rows: int,
        fsync_units: bool,
    ) -> None:
        """Use `RunWriter.create` or `RunWriter.resume`."""
        _check_roll_rows(roll_rows)
        self._dir = run_dir
        self._manifest = manifest
        self._lock_fd = lock_fd
        self._roll_rows = roll_rows
        self._fsync_units = fsync_units
        self._mutex = threading.Lock()
        self._keys: set[str] = set()
        self._failed: set[str] = set()
        self._pages = 0
        self._hits = 0
        self._requests_buf: list[pa.RecordBatch] = []
        self._hits_buf: list[pa.RecordBatch] = []
        self._buffered = 0
        self._parts: list[int] = []
        self._has_base = False
        self._withdrawn = Withdrawn()
        self.retried = 0  # keys withdrawn by this resume to be sent again (`retry_failed`)
        self._seq = 0
        self._segment: JournalSegment | None = None
        self._closed = False
        self.recovery = Recovery()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path | str,
        *,
        suite_name: str,
        suite_hash: str,
        base_url: str | None,
        dataset_id: str | None,
        tool_version: str,
        requests_planned: int,
        modes: Any = None,
        sweep: Any = None,
        shard: str | None = None,
        judgments: pa.Table | Rows | None = None,
        dataset_status: str | None = None,
        dataset_caveat: str | None = None,
        run_id: str | None = None,
        fusions: Any = None,
        started_at: dt.datetime | None = None,
        roll_rows: int = DEFAULT_ROLL_ROWS,
        fsync_units: bool = False,
    ) -> RunWriter:
        """Start a new run under `root` (hive layout, see `run_dir_for`) with status `running`.

        Writes `judgments.parquet` (the judgments the run will be evaluated with; none → an empty
        file) and `manifest.json`. `modes` and `sweep` go into the manifest as given and must be
        JSON-able. `dataset_status` is the dataset's status as the preflight found it, and
        `dataset_caveat` why results may shift (READ ONLY, PARTIAL INDEX), or None. `base_url`
        loses any user info or query string. `fsync_units=True` forces each
        recorded unit to disk (survives a power cut, costs a disk flush per unit); without it a
        unit survives any death of the process. Raises `RunError` if the directory exists.
        """
        _check_roll_rows(roll_rows)
        started = (started_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        run_id = run_id or new_run_id(started)
        run_dir = run_dir_for(root, suite_name, started.date(), run_id)
        manifest = new_manifest(
            run_dir,
            run_id=run_id,
            suite_name=suite_name,
            suite_hash=suite_hash,
            tool_version=tool_version,
            base_url=base_url,
            dataset_id=dataset_id,
            started=started,
            requests_planned=requests_planned,
            modes=modes,
            sweep=sweep,
            shard=shard,
            dataset_status=dataset_status,
            dataset_caveat=dataset_caveat,
            fusions=fusions,
        )
        judgments_batch = to_batch(
            judgments if judgments is not None else [], JUDGMENTS_SCHEMA, "judgments"
        )
        made = make_run_dir(run_dir)
        (run_dir / JOURNAL_DIR).mkdir()
        (run_dir / PARTS_DIR).mkdir()
        lock_fd = _files.lock(run_dir)
        writer = cls(run_dir, manifest, lock_fd, roll_rows=roll_rows, fsync_units=fsync_units)
        try:
            _files.write_parquet_atomic(
                run_dir / JUDGMENTS_FILE, [judgments_batch], JUDGMENTS_SCHEMA
            )
            write_manifest(run_dir, manifest)
            writer._open_segment(0)
        except BaseException:
            writer._release()
            shutil.rmtree(run_dir, ignore_errors=True)  # no manifest: no run, nothing to resume
            remove_folders(made)
            raise
        return writer

    @classmethod
    def resume(
        cls,
        run_dir: Path | str,
        *,
        suite_hash: str,
        requests_planned: int | None = None,
        roll_rows: int = DEFAULT_ROLL_ROWS,
        fsync_units: bool = False,
        retry_failed: bool = False,
    ) -> RunWriter:
        """Reopen a `running` (killed), `partial` or `failed` run to record its remaining units.

        Repairs what a crash left: completes an interrupted finish, deletes temp files, replays
        journal segments into Parquet parts and drops a torn last frame (see `recovery`). Sets
        the status back to `running`. Raises `RunError` for a run that is `complete`, a run of a
        different suite (`suite_hash` differs: the request keys would not mean the same), a run
        another process is writing, or a run whose files are corrupt. `retry_failed`: the keys with
        a failed page are no longer completed (`retried` says how many); a complete run is taken.
        """
        _check_roll_rows(roll_rows)
        run_dir = Path(run_dir)
        manifest = read_manifest(run_dir)
        check_resumable(run_dir, manifest, suite_hash, retry_failed=retry_failed)
        (run_dir / JOURNAL_DIR).mkdir(exist_ok=True)
        lock_fd = _files.lock(run_dir)
        writer = cls(run_dir, manifest, lock_fd, roll_rows=roll_rows, fsync_units=fsync_units)
        try:
            writer._recover(suite_hash, requests_planned, retry_failed)
        except BaseException:
            writer._release()
            raise
        return writer

    # -- what callers read ---------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self._dir

    @property
    def run_id(self) -> str:
        return str(self._manifest["run_id"])

    @property
    def buffered_rows(self) -> int:
        """Request and hit rows held in memory, not yet in a Parquet part: under `roll_rows`."""
        return self._buffered

    @property
    def counts(self) -> RunCounts:
        """The counts so far (what the manifest will say)."""
        return RunCounts(
            requests_planned=int(self._manifest["counts"]["requests_planned"]),
            requests_done=len(self._keys),
            requests_failed=len(self._failed),
            pages=self._pages,
            hits=self._hits,
        )

    def completed_keys(self) -> set[str]:
        """The request keys recorded durably (whatever their outcome): a resumed run skips them."""
        with self._mutex:
            return set(self._keys)

    # -- recording -----------------------------------------------------------------------------

    def record(self, request_rows: Rows, hit_rows: Rows) -> None:
        """Record one completed unit: every page row of its request key(s) and all their hits.

        After `record` returns, the unit survives a crash of the process; if the process dies
        during `record`, the unit is on resume either wholly present or wholly absent (then it is
        not in `completed_keys()` and is simply done again). A `RunError` raised after the unit
        reached the journal (a Parquet part that could not be written) leaves it recorded.

        Hits must be in rank order within each (request key, query id). Raises `RunError` for
        rows that do not fit the schema, a unit with no request row, hits of a key that has no
        request row in the unit, a request key already recorded, or a writer already finished.
        """
        requests, hits, keys = checked_unit(request_rows, hit_rows)
        failed = failed_keys(requests)
        frame = encode_unit(Unit(requests, hits))
        with self._mutex:
            self._check_open()
            again = keys & self._keys
            if again:
                raise RunError(f"{self._dir}: request key(s) {sorted(again)} already recorded")
            assert self._segment is not None
            self._segment.append(frame)
            self._keys |= keys
            self._failed |= failed
            self._pages += requests.num_rows
            self._hits += hits.num_rows
            self._requests_buf.append(requests)
            self._hits_buf.append(hits)
            self._buffered += requests.num_rows + hits.num_rows
            if self._buffered >= self._roll_rows:
                self._roll()

    def finish(self, status: str) -> RunInfo:
        """Write the final Parquet files and the manifest with `status`; the writer is then closed.

        `status`: "complete", "partial" (stopped early, e.g. Ctrl-C: resumable) or "failed"
        (also resumable). Memory stays bounded: the files are streamed part by part.
        """
        if status not in FINISH_STATUSES:
            raise RunError(f"finish(): status {status!r} is not one of {FINISH_STATUSES}")
        with self._mutex:
            self._check_open()
            if self._buffered and (self._parts or self._has_base):
                # Streaming the parts with these rows still held would raise the peak memory.
                self._roll()
            temps = {name: temp_path(self._dir / file) for name, file, _ in _files.TABLES}
            try:
                for name, file, schema in _files.TABLES:
                    _files.write_parquet_atomic(
                        temps[name], self._sources(file, name, schema), schema, rename=False
                    )
            except BaseException as exc:
                for tmp in temps.values():
                    tmp.unlink(missing_ok=True)
                if isinstance(exc, OSError):  # a full disk: exit 1, the run stays resumable
                    raise write_error(self._dir, exc) from exc
                raise
            manifest = {k: v for k, v in self._manifest.items() if k != WITHDRAWN}  # applied
            manifest.update(status=status, ended_at=utc_now_iso(), counts=self.counts.to_dict())
            plan = {"manifest": manifest, "temps": {n: t.name for n, t in temps.items()}}
            atomic_write_bytes(self._dir / FINALISE_FILE, orjson.dumps(plan))
            self._close_segment()
            _files.roll_forward(self._dir)
            self._manifest = manifest
            # The manifest is final: a resume that finds no lock now may start. Closing the
            # lock's descriptor last keeps anyone else out until then.
            with contextlib.suppress(FileNotFoundError):
                (self._dir / JOURNAL_DIR / LOCK_FILE).unlink()
            with contextlib.suppress(OSError):
                (self._dir / JOURNAL_DIR).rmdir()
            self._release()
        return open_run(self._dir)

    def close(self, status: str = "partial") -> None:
        """Finish with `status` unless finished already."""
        if not self._closed:
            self.finish(status)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        stopped = exc_type is None or issubclass(
            exc_type, KeyboardInterrupt | asyncio.CancelledError
        )
        self.finish("partial" if stopped else "failed")

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RunError(f"{self._dir}: the run writer is finished")

    def _open_segment(self, seq: int) -> None:
        self._seq = seq
        self._segment = JournalSegment(segment_path(self._dir, seq), fsync=self._fsync_units)
        fsync_dir(self._dir / JOURNAL_DIR)

    def _close_segment(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None

    def _roll(self) -> None:
        """Move the rows in memory into Parquet part `seq`, then start journal segment `seq+1`."""
        assert self._segment is not None
        seq = self._seq
        try:
            _files.write_part(self._dir, seq, self._requests_buf, self._hits_buf)
        except OSError as exc:
            # The units are safe in the journal; the part is retried at the next roll.
            raise write_error(self._dir / PARTS_DIR, exc) from exc
        self._parts.append(seq)
        self._requests_buf, self._hits_buf, self._buffered = [], [], 0
        self._segment.close()
        self._segment.path.unlink()
        self._open_segment(seq + 1)
        # Counts in a running run's manifest let a watcher see progress; cheap at this rate.
        manifest = dict(self._manifest, counts=self.counts.to_dict())
        write_manifest(self._dir, manifest)
        self._manifest = manifest

    def _sources(
        self, file: str, name: str, schema: pa.Schema
    ) -> Iterator[pa.RecordBatch | pa.Table]:
        """The rows of one table in record order: previous final file, the parts, the memory.

        Rows still in memory (a run too short to have rolled a part) go straight into the final
        file, not through a part written and read back: until `_finalise.json` exists they are
        still in the journal, so a crash during `finish` loses nothing.
        """
        keep = self._withdrawn.keep  # drops the old rows of keys a retry withdrew
        if self._has_base:
            yield from keep(_files.row_groups(self._dir / file, schema), BASE_SEQ)  # perhaps older
        for seq in self._parts:
            yield from keep(_files.row_groups(part_path(self._dir, seq, name), schema), seq)
        buffered = self._requests_buf if name == "requests" else self._hits_buf
        if buffered:
            yield pa.Table.from_batches(buffered)

    def _recover(self, suite_hash: str, requests_planned: int | None, retry: bool) -> None:
        found = recover(self._dir, suite_hash, retry_failed=retry)
        self._parts, self._has_base = found.parts, found.has_base
        self._withdrawn, self.retried = found.withdrawn, found.retried
        self._keys, self._failed = found.keys, found.failed
        self._pages, self._hits = found.pages, found.hits
        self.recovery = found.recovery
        self._manifest = found.reopened(requests_planned)  # any withdrawal: this write decides it
        write_manifest(self._dir, self._manifest)
        self._open_segment(found.next_seq)

    def _release(self) -> None:
        self._close_segment()
        self._closed = True
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # also releases the flock
            self._lock_fd = -1


# -- helpers -----------------------------------------------------------------------------------


def _check_roll_rows(roll_rows: int) -> None:
    if roll_rows < 1:
        raise RunError(f"roll_rows must be at least 1, not {roll_rows}")
