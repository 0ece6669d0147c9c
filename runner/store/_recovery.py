"""What `RunWriter.resume` finds on disk and repairs, before the writer takes the run again.

A crash leaves a run in one of the states `_writer` describes: an interrupted finish (rolled
forward from `_finalise.json`), temp files (deleted), journal segments whose units never reached
a Parquet part (replayed into parts), a torn last frame (dropped: that unit is done again).
`recover` does all of it and returns the state a writer continues from.
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
from runner.store._manifest import read_manifest
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


def check_resumable(run_dir: Path, manifest: dict[str, Any], suite_hash: str) -> None:
    """Refuse a complete run, or a run made from another suite (its keys mean other requests)."""
    if manifest["status"] == "complete":
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


def recover(run_dir: Path, suite_hash: str) -> Recovered:
    """Repair what a crash left in `run_dir` (held locked by the caller); see the module doc."""
    rolled = _files.roll_forward(run_dir) if (run_dir / FINALISE_FILE).exists() else False
    manifest = read_manifest(run_dir)
    check_resumable(run_dir, manifest, suite_hash)
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
    )
    _count_existing(run_dir, found)
    return found


def _count_existing(run_dir: Path, found: Recovered) -> None:
    """Rebuild keys and counts from the final files and the parts."""
    requests = [run_dir / REQUESTS_FILE] if found.has_base else []
    hits = [run_dir / HITS_FILE] if found.has_base else []
    requests += [part_path(run_dir, s, "requests") for s in found.parts]
    hits += [part_path(run_dir, s, "hits") for s in found.parts]
    for path in requests:
        pf = _files.parquet_file(path, REQUESTS_SCHEMA)
        seen: set[str] = set()
        for batch in pf.iter_batches(columns=["request_key", "outcome"]):
            seen.update(batch.column(0).to_pylist())
            found.failed |= failed_keys(batch)
            found.pages += batch.num_rows
        again = seen & found.keys
        if again:
            raise RunError(f"{path}: request key(s) {sorted(again)[:3]} recorded twice in this run")
        found.keys |= seen
    for path in hits:
        found.hits += _files.parquet_file(path, HITS_SCHEMA).metadata.num_rows
