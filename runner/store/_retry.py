"""Withdrawn request keys: how a resume with `retry_failed` sends failed requests again.

A retry must never leave two sets of rows for one key, nor an old failed row beside a new one,
whenever the process dies. Rewriting the run's files to drop the failed rows would take several
renames, so the decision is instead ONE atomic write of the manifest, made when the writer
reopens the run and before it records anything:

    "withdrawn": [{"before_part": 7, "keys": ["k3", "k9"]}]

At that moment every recorded row is in the final files of an earlier finish or in a Parquet part
below 7 (resume replays the journal into parts first), and every row recorded from then on goes to
journal segment / part 7 or later. So a row of a withdrawn key is old, and dropped, exactly when
it comes from a source older than `before_part`: the final files (`BASE_SEQ`) or a lower part.
Every reader of a run's parts drops them: recovery's keys and counts, `finish` streaming into the
final files, and the reader of a running run. `finish` writes the final files without them and
its manifest without `withdrawn`, in the one step (`_finalise.json`) that commits both.
The decision's write also appends `{"at": ..., "requests": n}` to the manifest's `retries`,
which the finish keeps: a report says what was sent again, and when.

A key withdrawn twice (it failed again, and a second retry was asked before the run finished)
keeps the later `before_part`: its rows of the first retry are old by then too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from runner.errors import RunError

__all__ = ["BASE_SEQ", "RETRIES", "WITHDRAWN", "Withdrawn"]

WITHDRAWN: Final = "withdrawn"  # the manifest's key
RETRIES: Final = "retries"  # the manifest's record of each retry: [{"at": ..., "requests": n}]
BASE_SEQ: Final = -1  # the sequence number of the final files: older than every part
_T = TypeVar("_T", pa.Table, pa.RecordBatch)


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """Request keys whose rows older than a part are void: key → that part's sequence number."""

    before: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, manifest: Mapping[str, Any], *, where: object = "manifest") -> Withdrawn:
        """The withdrawals a manifest records (none: an empty `Withdrawn`)."""
        groups = manifest.get(WITHDRAWN) or []
        before: dict[str, int] = {}
        try:
            for group in groups:
                seq = int(group["before_part"])
                for key in group["keys"]:
                    before[str(key)] = max(seq, before.get(str(key), seq))
        except (TypeError, KeyError, ValueError):
            raise RunError(f"{where}: corrupt manifest, {WITHDRAWN} is malformed") from None
        return cls(before)

    def __bool__(self) -> bool:
        return bool(self.before)

    def adding(self, keys: Set[str], before_part: int) -> Withdrawn:
        """These withdrawals and `keys`, whose rows below part `before_part` are void."""
        return Withdrawn({**self.before, **dict.fromkeys(keys, before_part)})

    def to_json(self) -> list[dict[str, Any]]:
        """The manifest's form: one group a `before_part`, keys sorted (readable, stable)."""
        groups: dict[int, list[str]] = {}
        for key, seq in self.before.items():
            groups.setdefault(seq, []).append(key)
        return [{"before_part": s, "keys": sorted(k)} for s, k in sorted(groups.items())]

    def void_in(self, seq: int) -> frozenset[str]:
        """The keys whose rows in source `seq` (a part, or `BASE_SEQ`) are void."""
        return frozenset(key for key, before in self.before.items() if seq < before)

    def keep(self, sources: Iterable[_T], seq: int) -> Iterator[_T]:
        """The rows of source `seq` that stand, table by table (unchanged: no void key in it)."""
        void = self.void_in(seq)
        for source in sources:
            yield drop_keys(source, void) if void else source


def drop_keys(rows: _T, keys: Set[str]) -> _T:
    """`rows` without those whose `request_key` is one of `keys`."""
    void = pa.array(sorted(keys), pa.string())
    mask = pc.invert(pc.is_in(rows.column("request_key"), value_set=void))
    return rows.filter(mask)
