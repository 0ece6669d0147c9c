"""A unit's pages as rows of the run directory, handed to the store a few units at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from runner.api.client import Page
from runner.execute._types import RunSink
from runner.plan import RequestSpec
from runner.schema import HITS_SCHEMA, REQUESTS_SCHEMA, SETTING_COLUMNS

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


# The hit columns a hit shares with its request row (its spec and page): taken from the request
# rows by index at a flush instead of being repeated hit by hit.
_SHARED: Final = ("request_key", "query_id", "mode", *SETTING_COLUMNS, "page")


def _empty(names: Sequence[str]) -> dict[str, list[Any]]:
    return {name: [] for name in names}


@dataclass(frozen=True, slots=True)
class _Pairs:
    """Which page's hits go to which request row: one entry a (spec, page) pair, as arrays."""

    row: np.ndarray  # the request row the hits belong to
    page: np.ndarray  # index of the page in the flush's list of pages
    clusters_before: np.ndarray  # clusters on the earlier pages of the same request
    hits_before: np.ndarray  # hits on the earlier pages of the same request


def _hit_rows(
    requests: pa.RecordBatch, pages: list[pa.StructArray], pairs: _Pairs
) -> pa.RecordBatch:
    """The hit rows of every (spec, page) pair, in pair order, each page's hits in rank order.

    Arrow and numpy over all the pages of a flush at once, no Python step a hit. Ranks are
    1-based and run on across the pages of a request: `cluster_rank` over clusters,
    `preview_rank` within a cluster, `rank` over every hit. A hit's `score_type` is its
    preview's, else its cluster's; its labels are its preview's, else (the only preview of its
    cluster on the page) its cluster's.
    """
    data = pages[0] if len(pages) == 1 else pa.concat_arrays(pages)
    lists = data.field("previews")
    offsets = lists.offsets.to_numpy().astype(np.int64)  # into `lists.values`
    per_cluster = np.diff(offsets)
    page_clusters = np.fromiter((len(p) for p in pages), np.int64, len(pages))
    page_start = np.cumsum(page_clusters) - page_clusters  # first cluster of each page
    hit_start = offsets[page_start]  # first hit of each page
    per_pair = (offsets[page_start + page_clusters] - hit_start)[pairs.page]
    pair_first = np.cumsum(per_pair) - per_pair  # each pair's first row
    within = np.arange(int(per_pair.sum())) - np.repeat(pair_first, per_pair)
    hit = np.repeat(hit_start[pairs.page], per_pair) + within  # index into `lists.values`
    owner = np.repeat(np.arange(len(data)), per_cluster)[hit - offsets[0]]  # index into `data`
    shift = np.repeat(pairs.clusters_before - page_start[pairs.page], per_pair)
    previews = lists.values
    if len(hit) != len(previews) or not np.array_equal(hit, np.arange(len(previews))):
        previews = previews.take(pa.array(hit))  # a page fanned out to several query ids
    taken = pa.array(owner)
    score_type = previews.field("relevance_score_type")
    if score_type.null_count:  # a preview without a score type has its cluster's
        score_type = pc.coalesce(score_type, data.field("relevance_score_type").take(taken))
    raw = previews.field("relevance_score")
    distance = pc.fill_null(pc.equal(score_type, "cosine_distance"), False)
    labels = previews.field("labels")
    alone = (per_cluster[owner] == 1) & labels.is_null().to_numpy(zero_copy_only=False)
    if alone.any():  # the only preview of its cluster, without labels: the cluster's
        labels = pc.if_else(pa.array(alone), data.field("labels").take(taken), labels)
    own = {
        "cluster_rank": pa.array((owner + shift + 1).astype(np.int32)),
        "cluster_id": data.field("cluster_id").take(taken),
        "cluster_size": data.field("n_images").take(taken),
        "cluster_score": data.field("relevance_score").take(taken),
        "preview_rank": pa.array((hit - offsets[owner] + 1).astype(np.int32)),
        "rank": pa.array((within + np.repeat(pairs.hits_before, per_pair) + 1).astype(np.int32)),
        "media_id": previews.field("media_id"),
        "file_name": previews.field("file_name"),
        "caption": previews.field("caption"),
        "raw_score": raw,
        "score_type": score_type,
        # normalise_score: a cosine distance d becomes 1 - d, other scores are kept
        "score": pc.if_else(distance, pc.subtract(1.0, raw), raw),
        "labels": labels,
        "media_thumb_uri": previews.field("media_thumb_uri"),
    }
    shared = requests.select(list(_SHARED)).take(pa.array(np.repeat(pairs.row, per_pair)))
    columns = [shared.column(n) if n in _SHARED else own[n] for n in HITS_SCHEMA.names]
    return pa.RecordBatch.from_arrays(columns, schema=HITS_SCHEMA)


@dataclass(frozen=True, slots=True)
class _Waiting:
    """The units taken out of a recorder for one record: their request columns, pages, pairs."""

    req: dict[str, list[Any]]
    pages: list[pa.StructArray]
    pairs: list[tuple[int, int, int, int]]


class Recorder:
    """Completed units as rows of the run, handed to the store a few units at a time.

    A unit's request rows are one a page and spec (a wire request shared by several query ids is
    fanned out to each); its hit rows one a preview. A unit's pages wait here as the Arrow
    arrays the client parsed them into; its rows are made at the flush, for all waiting units at
    once (`_hit_rows`). Several whole units go to `record` in one call (one journal frame: all
    of them or none survive a crash), which spreads the per-call costs. A unit waits here at most
    `max_wait_s`; a crash loses only units not yet recorded, which a resume sends again.

    `add` only collects; the caller flushes when `ready()`: `flush()` here and now, or
    `await flush_in_thread()`, which makes the rows and records them in a worker thread, one
    flush at a time and in order, so that the event loop goes on pacing requests while the
    store writes (a Parquet part every ~50,000 rows blocked the loop for up to 250 ms, a
    quarter second of 200/s lost for good). `drain()` waits for a flush still in a thread.
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
        self._lock = asyncio.Lock()
        self._in_thread: asyncio.Future[None] | None = None
        # One thread of its own, not the loop's pool: flushes go one at a time anyway, and each
        # pool thread Arrow allocates in keeps memory of its own (~30 MB more at 800 req/s).
        self._thread: ThreadPoolExecutor | None = None
        self._reset()

    def _reset(self) -> None:
        self._req = _empty(REQUESTS_SCHEMA.names)
        self._pages: list[pa.StructArray] = []
        self._pairs: list[tuple[int, int, int, int]] = []  # see `_Pairs`
        self._hits = 0
        self._units = 0
        self._since: float | None = None

    def add(self, specs: Sequence[RequestSpec], pages: Sequence[Fetched]) -> int:
        """Take one completed unit; returns its hit rows."""
        hits = self._append(specs, pages)
        self._units += 1
        if self._since is None:
            self._since = time.monotonic()
        return hits

    def ready(self) -> bool:
        """Whether enough units (or rows) wait, or the oldest has waited long enough."""
        rows = len(self._req["request_key"]) + self._hits
        return self._units >= self._max_units or rows >= self._max_rows or self.due()

    def _append(self, specs: Sequence[RequestSpec], pages: Sequence[Fetched]) -> int:
        req, added = self._req, 0
        first = len(self._pages)
        self._pages.extend(f.page.data for f in pages if f.page is not None)
        for spec in specs:
            common = {"request_key": spec.key, "query_id": spec.query_id, "mode": spec.mode}
            common.update(_setting_values(spec))
            clusters_before = hits_before = 0
            index = first
            for fetched in pages:
                page = fetched.page
                n_clusters, n = (page.n_clusters, page.n_previews) if page else (0, 0)
                row = dict(
                    common,
                    query_text=spec.query_text,
                    page=fetched.page_number,
                    outcome=fetched.outcome,
                    http_status=fetched.status,
                    attempts=fetched.attempts,
                    sent_at=dt.datetime.fromtimestamp(fetched.sent_at, dt.UTC),
                    latency_ms=fetched.latency_ms,
                    clusters=n_clusters,
                    previews=n,
                    error=fetched.error,
                )
                row_index = len(req["request_key"])
                for name, values in req.items():
                    values.append(row[name])
                if page is None:
                    continue
                self._pairs.append((row_index, index, clusters_before, hits_before))
                index += 1
                clusters_before += n_clusters
                hits_before += n
                added += n
        self._hits += added
        return added

    def due(self) -> bool:
        """Whether the oldest waiting unit has waited long enough."""
        return self._since is not None and time.monotonic() - self._since >= self.max_wait_s

    def _take(self) -> _Waiting | None:
        if not self._units:
            return None
        waiting = _Waiting(self._req, self._pages, self._pairs)
        self._reset()
        return waiting

    def _record(self, waiting: _Waiting) -> None:
        requests = pa.RecordBatch.from_pydict(waiting.req, schema=REQUESTS_SCHEMA)
        if waiting.pairs:
            columns = (np.array(c, dtype=np.int64) for c in zip(*waiting.pairs, strict=True))
            hits = _hit_rows(requests, waiting.pages, _Pairs(*columns))
        else:
            hits = _no_hits()
        self._writer.record(requests, hits)

    def flush(self) -> None:
        """Record every waiting unit now, in this thread (may raise `RunError`).

        Call `drain()` first if a flush may still be in a thread.
        """
        waiting = self._take()
        if waiting is not None:
            self._record(waiting)

    async def flush_in_thread(self) -> None:
        """Record every waiting unit in a worker thread, after the flush before it (`RunError`).

        Cancelling the caller does not cancel the record: the units are on their way to the
        store, and `drain()` waits for them.
        """
        async with self._lock:
            waiting = self._take()
            if waiting is None:
                return
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="vlbench-record")
            loop = asyncio.get_running_loop()
            self._in_thread = loop.run_in_executor(self._thread, self._record, waiting)
            await asyncio.shield(self._in_thread)

    async def drain(self) -> BaseException | None:
        """Wait for a flush still in a thread and end the thread; the flush's error, if any."""
        in_thread, thread = self._in_thread, self._thread
        self._thread = None
        if thread is not None:
            thread.shutdown(wait=False)  # ends once its last record is done
        if in_thread is None:
            return None
        await asyncio.wait([in_thread])
        return None if in_thread.cancelled() else in_thread.exception()

    async def flush_when_due(self) -> None:
        """Run beside the workers: record units that have waited `max_wait_s`."""
        while True:
            await asyncio.sleep(self.max_wait_s / 2)
            if self.due():
                await self.flush_in_thread()


def _no_hits() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=HITS_SCHEMA)
