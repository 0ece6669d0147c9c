"""A unit's pages as rows of the run directory, handed to the store a few units at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa

from runner.client import Page, PageColumns
from runner.execute._types import RunSink
from runner.plan import RequestSpec
from runner.schema import HITS_SCHEMA, REQUESTS_SCHEMA, SETTING_COLUMNS, normalise_score

__all__ = ["Fetched", "Recorder"]


@dataclass(frozen=True, slots=True)
class Fetched:
    """A page request after its retries: the page, or the final failure."""

    page_number: int
    page: Page | None
    outcome: str
    status: int | None
    attempts: int
    sent_at: float
    latency_ms: float
    error: str | None = None


def _setting_values(spec: RequestSpec) -> dict[str, Any]:
    return {
        "setting": spec.setting,
        "entity_type": spec.entity_type,
        "threshold": spec.threshold,
        "textual_similarity_threshold": spec.textual_similarity_threshold,
        "semantic_threshold": spec.semantic_threshold,
        "cutoff": spec.cutoff,
        "labels_filter": list(spec.labels_filter) if spec.labels_filter is not None else None,
    }


# The hit columns a hit shares with its request row (its spec and page): at a flush they are
# taken from the request rows by index (C speed) instead of being repeated hit by hit in Python.
_SHARED: Final = ("request_key", "query_id", "mode", *SETTING_COLUMNS, "page")
_OWN: Final = tuple(name for name in HITS_SCHEMA.names if name not in _SHARED)


def _empty(names: Sequence[str]) -> dict[str, list[Any]]:
    return {name: [] for name in names}


def _append_page_hits(
    hit: dict[str, list[Any]], c: PageColumns, clusters_before: int, hits_before: int
) -> None:
    """Append the own columns of one page's hits (a list comprehension a column: pages are big).

    Ranks are 1-based and run on across pages: `cluster_rank` over clusters, `preview_rank`
    within a cluster, `rank` over every hit of the request. A hit's labels are its preview's,
    else (a cluster of one) its cluster's.
    """
    owner = c.hit_cluster
    n = len(owner)
    per_cluster = [0] * len(c.cluster_id)
    for k in owner:
        per_cluster[k] += 1
    kinds = [
        t if t is not None else c.cluster_score_type[k]
        for t, k in zip(c.score_type, owner, strict=True)
    ]
    hit["cluster_rank"].extend([clusters_before + k + 1 for k in owner])
    hit["cluster_id"].extend([c.cluster_id[k] for k in owner])
    hit["cluster_size"].extend([c.n_images[k] for k in owner])
    hit["cluster_score"].extend([c.cluster_score[k] for k in owner])
    hit["preview_rank"].extend(c.preview_rank)
    hit["rank"].extend(range(hits_before + 1, hits_before + n + 1))
    hit["media_id"].extend(c.media_id)
    hit["file_name"].extend(c.file_name)
    hit["caption"].extend(c.caption)
    hit["raw_score"].extend(c.score)
    hit["score_type"].extend(kinds)
    hit["score"].extend([normalise_score(r, t) for r, t in zip(c.score, kinds, strict=True)])
    hit["labels"].extend(
        [
            labels if labels is not None or per_cluster[k] != 1 else c.cluster_labels[k]
            for labels, k in zip(c.labels, owner, strict=True)
        ]
    )


class Recorder:
    """Completed units as rows of the run, handed to the store a few units at a time.

    A unit's request rows are one a page and spec (a wire request shared by several query ids is
    fanned out to each); its hit rows one a preview. Several whole units go to `record` in one
    call (one journal frame: all of them or none survive a crash), which spreads the store's
    per-call cost. A unit waits here at most `max_wait_s`; a crash loses only units not yet
    recorded, which a resume sends again.
    """

    def __init__(
        self,
        writer: RunSink,
        *,
        max_units: int = 64,
        max_rows: int = 20_000,
        max_wait_s: float = 0.5,
    ) -> None:
        self._writer = writer
        self._max_units, self._max_rows, self.max_wait_s = max_units, max_rows, max_wait_s
        self._req, self._hit = _empty(REQUESTS_SCHEMA.names), _empty(_OWN)
        self._hit_row: list[int] = []  # each hit's request row
        self._units = 0
        self._since: float | None = None

    def add(self, specs: Sequence[RequestSpec], pages: Sequence[Fetched]) -> int:
        """Take one completed unit; returns its hit rows. May record (and raise `RunError`)."""
        hits = self._append(specs, pages)
        self._units += 1
        if self._since is None:
            self._since = time.monotonic()
        rows = len(self._req["request_key"]) + len(self._hit_row)
        if self._units >= self._max_units or rows >= self._max_rows or self.due():
            self.flush()
        return hits

    def _append(self, specs: Sequence[RequestSpec], pages: Sequence[Fetched]) -> int:
        req, added = self._req, 0
        for spec in specs:
            common = {"request_key": spec.key, "query_id": spec.query_id, "mode": spec.mode}
            common.update(_setting_values(spec))
            clusters_before = hits_before = 0
            for fetched in pages:
                page = fetched.page
                row = dict(
                    common,
                    query_text=spec.query_text,
                    page=fetched.page_number,
                    outcome=fetched.outcome,
                    http_status=fetched.status,
                    attempts=fetched.attempts,
                    sent_at=dt.datetime.fromtimestamp(fetched.sent_at, dt.UTC),
                    latency_ms=fetched.latency_ms,
                    clusters=page.n_clusters if page else 0,
                    previews=page.n_previews if page else 0,
                    error=fetched.error,
                )
                row_index = len(req["request_key"])
                for name, values in req.items():
                    values.append(row[name])
                if page is None:
                    continue
                _append_page_hits(self._hit, page.columns, clusters_before, hits_before)
                n = page.n_previews
                self._hit_row.extend(itertools.repeat(row_index, n))
                clusters_before += page.n_clusters
                hits_before += n
                added += n
        return added

    def due(self) -> bool:
        """Whether the oldest waiting unit has waited long enough."""
        return self._since is not None and time.monotonic() - self._since >= self.max_wait_s

    def flush(self) -> None:
        """Record every waiting unit now."""
        if not self._units:
            return
        requests = pa.RecordBatch.from_pydict(self._req, schema=REQUESTS_SCHEMA)
        shared = requests.select(list(_SHARED)).take(pa.array(self._hit_row, type=pa.int32()))
        own = {name: pa.array(self._hit[name], type=HITS_SCHEMA.field(name).type) for name in _OWN}
        columns = [shared.column(n) if n in _SHARED else own[n] for n in HITS_SCHEMA.names]
        hits = pa.RecordBatch.from_arrays(columns, schema=HITS_SCHEMA)
        self._req, self._hit = _empty(REQUESTS_SCHEMA.names), _empty(_OWN)
        self._hit_row = []
        self._units, self._since = 0, None
        self._writer.record(requests, hits)

    async def flush_when_due(self) -> None:
        """Run beside the workers: record units that have waited `max_wait_s`."""
        while True:
            await asyncio.sleep(self.max_wait_s / 2)
            if self.due():
                self.flush()
