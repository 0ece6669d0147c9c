"""What `RunWriter.resume` finds on disk and repairs, before the writer takes the run again.

A crash leaves a run in one of the states `_writer` describes: an interrupted finish (rolled
forward from `_finalise.json`), temp files (deleted), journal segments whose units never reached
a Parquet part (replayed into parts), a torn last frame (dropped: that unit is done again).
`recover` does all of it and returns the state a writer continues from: keys and counts without
the old rows of keys a retry withdrew, and, asked to retry, a new withdrawal (see `_retry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from runner.errors import RunError
from runner.schema import HITS_FILE, HITS_SCHEMA, REQUESTS_FILE, REQUESTS_SCHEMA
from runner.store import _files
from runner.store._layout import FINALISE_FILE, JOURNAL_DIR, PARTS_DIR, part_path
from runner.store._manifest import RunCounts, read_manifest, utc_now_iso
from runner.store._retry import BASE_SEQ, RETRIES, WITHDRAWN, Withdrawn
from runner.store.atomic import fsync_dir

__all__ = ["Recovered", "Recovery", "check_resumable", "failed_keys", "recover"]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What `RunWriter.resume` found and repaired.

    `units_replayed`: units read back from journal segments that had not reached a Parquet part;
    `torn_bytes`: bytes of a torn last frame that were dropped (that unit is simply not recorded
    and will be redone); `rolled_forward`: an interrupted `finish` was completed.
    """

    units_replayed: int = 0
    torn_bytes: int = 0
    rolled_forward: bool = False


@dataclass(slots=True)
class Recovered:
    """The state of a repaired run: its manifest, committed parts, keys and counts so far."""

    manifest: dict[str, Any]
    parts: list[int]
    has_base: bool
    next_seq: int
    recovery: Recovery
    keys: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    pages: int = 0
    hits: int = 0
    withdrawn: Withdrawn = field(default_factory=Withdrawn)
    retried: int = 0  # keys withdrawn by this resume, to be sent again

    def reopened(self, requests_planned: int | None) -> dict[str, Any]:
        """The manifest of the run taken up again: `running`, resumed now, with its counts."""
        manifest = self.manifest
        planned = manifest["counts"]["requests_planned"]
        if requests_planned is not None:
            planned = requests_planned
        counts = RunCounts(
            requests_planned=int(planned),
            requests_done=len(self.keys),
            requests_failed=len(self.failed),
            pages=self.pages,
            hits=self.hits,
        )
        manifest.update(
            status="running",
            ended_at=None,
            resumed_at=[*manifest.get("resumed_at", []), utc_now_iso()],
            counts=counts.to_dict(),
        )
        return manifest


def check_resumable(
    run_dir: Path, manifest: dict[str, Any], suite_hash: str, *, retry_failed: bool = False
) -> None:
    """Refuse a run made from another suite (its keys mean other requests), or a complete run.

    A complete run is taken with `retry_failed`: the requests that failed in it are sent again.
    """
    if manifest["status"] == "complete" and not retry_failed:
        raise RunError(f"{run_dir}: run is complete; nothing to resume (start a new run)")
    if manifest["suite_hash"] != suite_hash:
        raise RunError(
            f"{run_dir}: run was made from a different suite (hash {manifest['suite_hash']}, "
            f"this suite {suite_hash}); resume it with the suite it was started with"
        )


def failed_keys(requests: pa.RecordBatch) -> set[str]:
    """Keys with a page whose outcome is not "ok" (a few rows per unit: plain Python is faster)."""
    keys = requests.column("request_key").to_pylist()
    outcomes = requests.column("outcome").to_pylist()
    return {key for key, outcome in zip(keys, outcomes, strict=True) if outcome != "ok"}


def recover(run_dir: Path, suite_hash: str, *, retry_failed: bool = False) -> Recovered:
    """Repair what a crash left in `run_dir` (held locked by the caller); see the module doc.

    With `retry_failed`, the keys with a failed page are withdrawn (`_retry`): the manifest
    returned records it, and the caller's write of it is the decision to send them again.
    """
    rolled = _files.roll_forward(run_dir) if (run_dir / FINALISE_FILE).exists() else False
    manifest = read_manifest(run_dir)
    check_resumable(run_dir, manifest, suite_hash, retry_failed=retry_failed)
    _files.delete_temps(run_dir)
    (run_dir / PARTS_DIR).mkdir(exist_ok=True)
    committed = _files.committed_parts(run_dir)
    replayed, torn, seqs = 0, 0, set(committed)
    for segment in sorted((run_dir / JOURNAL_DIR).glob("*.vlj")):
        seq = int(segment.stem)
        seqs.add(seq)
        if seq not in committed:
            units, good = _files.read_units(segment)
            torn += segment.stat().st_size - good
            if units:
                _files.write_part(
                    run_dir, seq, [u.requests for u in units], [u.hits for u in units]
                )
                committed.append(seq)
                replayed += len(units)
        segment.unlink()
    fsync_dir(run_dir / JOURNAL_DIR)
    found = Recovered(
        manifest=manifest,
        parts=sorted(committed),
        has_base=(run_dir / REQUESTS_FILE).exists() or (run_dir / HITS_FILE).exists(),
        next_seq=max(seqs, default=-1) + 1,
        recovery=Recovery(units_replayed=replayed, torn_bytes=torn, rolled_forward=rolled),
        withdrawn=Withdrawn.of(manifest, where=run_dir),
    )
    _count_requests(run_dir, found)
    if retry_failed and found.failed:
        # Every row so far is in the final files or a part below next_seq (the journal was
        # replayed above); every row recorded from now on goes to next_seq or later.
        found.retried = len(found.failed)
        found.withdrawn = found.withdrawn.adding(found.failed, found.next_seq)
        manifest[WITHDRAWN] = found.withdrawn.to_json()
        # Kept after the finish (unlike `withdrawn`): a report says which failures were retried.
        retry = {"at": utc_now_iso(), "requests": found.retried}
        manifest[RETRIES] = [*manifest.get(RETRIES, []), retry]
        found.keys, found.failed, found.pages = set(), set(), 0
        _count_requests(run_dir, found)
    _count_hits(run_dir, found)
    return found


def _sources(run_dir: Path, found: Recovered, table: str) -> list[tuple[int, Path]]:
    """(sequence number, path) of each file holding rows of `table`: the final file, the parts."""
    final = REQUESTS_FILE if table == "requests" else HITS_FILE
    base = [(BASE_SEQ, run_dir / final)] if found.has_base else []
    return base + [(s, part_path(run_dir, s, table)) for s in found.parts]


def _count_requests(run_dir: Path, found: Recovered) -> None:
    """Rebuild keys, failed keys and pages from the final file and the parts (withdrawn: not)."""
    for seq, path in _sources(run_dir, found, "requests"):
        pf = _files.parquet_file(path, REQUESTS_SCHEMA)
        seen: set[str] = set()
        batches = pf.iter_batches(columns=["request_key", "outcome"])
        for batch in found.withdrawn.keep(batches, seq):
            seen.update(batch.column(0).to_pylist())
            found.failed |= failed_keys(batch)
            found.pages += batch.num_rows
        again = seen & found.keys
        if again:
            raise RunError(f"{path}: request key(s) {sorted(again)[:3]} recorded twice in this run")
        found.keys |= seen


def _count_hits(run_dir: Path, found: Recovered) -> None:
    for seq, path in _sources(run_dir, found, "hits"):
        pf = _files.parquet_file(path, HITS_SCHEMA)
        if not found.withdrawn.void_in(seq):
            found.hits += pf.metadata.num_rows  # nothing withdrawn in it: no need to read it
            continue
        batches = pf.iter_batches(columns=["request_key"])
        found.hits += sum(b.num_rows for b in found.withdrawn.keep(batches, seq))
