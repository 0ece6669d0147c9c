"""The search index of one dataset directory: what the local Explore server answers from.

    index = SearchIndex.open(Path("datasets/demo"))
    page = index.search_page(SearchRequest(text=TextQuery("semantic", "a dog on a beach")), 0)

Everything is computed in numpy over columns held in memory (embeddings memory-mapped): a
semantic search is one matrix-vector product over all vectors (`within_distance`, which takes
any embedding matrix), full-text search is FTS5's bm25 in numpy (`runner.server.bm25`), and a
page is ranked and written by `runner.server.page`: never a Python loop over rows.
Semantics (see `runner.server.query` for scores):

- Filters are ANDed: `labels_one_of` (any of), `tags_is` (any of), `duplicates` (duplicate score
  >= value), `uniqueness` (uniqueness score >= value); an empty tuple matches nothing.
- `caption`/`semantic` keep items with a caption and d = clip(1 - cos, 0, 2) <= cutoff (exact: every
  vector is scored), ranked by d ascending; `fts` ranks every caption holding any term by -bm25
  descending; no text keeps every item that passes the filters (score 0.0, type "none").
- Ties go to the lower row (import order). Matches are grouped by their cluster at the asked
  granularity; a cluster's score is its best member's; clusters are ordered best first, ties by
  cluster index (= by cluster id, which sorts the same way); members best first.
- `entity_type` "OBJECTS" matches nothing: datasets hold images only.

Matches are cached per request (an LRU of 32 requests and at most 64 MiB), so paging through
one query costs one search; `search_page_json` gives a page as the explore answer's JSON.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import DatasetError
from runner.server.dataset import (
    EMBEDDINGS_FILE,
    FTS_FILE,
    FTS_TABLE,
    FTS_TOKENIZER,
    IMAGE_EMBEDDINGS_FILE,
    MEDIA_FILE,
    TextEncoder,
    read_info,
)
from runner.server.filters import label_rules_mask
from runner.server.fts import FtsIndex
from runner.server.page import Grouped, Matches, PageWriter, collect, ranked, window
from runner.server.query import (
    DEFAULT_CUTOFF,
    GRANULARITIES,
    ClusterMatch,
    DatasetInfo,
    MemberMatch,
    ScoreType,
    SearchRequest,
)

__all__ = ["EXPORT_COLUMNS", "PAGE_SIZE", "QUICK_MAX_ITEMS", "SearchIndex", "within_distance"]

PAGE_SIZE: Final = 100
EXPORT_COLUMNS: Final = (
    "media_id",
    "file_name",
    "caption",
    "labels",
    "width",
    "height",
    "media_uri",
    "uniqueness",
)
_CACHE_SIZE: Final = 32
# Up to this many items a search without a query to embed takes well under a millisecond (demo,
# 2,537 items: 0.2 ms in-process), so the server runs it on its event loop: the hop to the index
# thread and back cost more (bench_server, fts: 0.80 -> 0.50 ms of CPU a request). Above it
# (100,000 items: fts 3 ms, semantic 7 ms) the thread keeps the loop free meanwhile.
QUICK_MAX_ITEMS: Final = 20_000
_CACHE_BYTES: Final = 64 * 2**20
_MEMBER_COLUMNS: Final = ("media_id", "file_name", "caption", "width", "height", "media_uri")

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class SearchIndex:
    """A dataset directory opened for search; see the module docstring. Thread-safe.

    `encoder` embeds semantic queries; by default `runner.server.encoder.load_encoder()`, loaded
    on the first semantic search.
    """

    def __init__(
        self,
        path: Path,
        info: DatasetInfo,
        media: pa.Table,
        embeddings: npt.NDArray[np.float32],
        fts: FtsIndex,
        encoder: TextEncoder | None,
        image_embeddings: npt.NDArray[np.float32] | None = None,
    ) -> None:
        self.path = path
        self.info = info
        self._media = media
        self._embeddings = embeddings
        # What semantic and visual search rank by (runner.server.dataset); captions' by default.
        self._image_embeddings = embeddings if image_embeddings is None else image_embeddings
        self._fts = fts
        self._encoder = encoder
        self._lock = threading.Lock()
        self._cache: OrderedDict[SearchRequest, Matches] = OrderedDict()
        self._cache_bytes = 0
        # Columns as single arrays (O(1) access by row); no Python object per row but the
        # media id lookup and the label and tag tuples (filters and unions need those).
        self._columns = {name: media.column(name).combine_chunks() for name in _MEMBER_COLUMNS}
        self._labels = _tuples(media.column("labels").to_pylist())
        self._tags = _tuples(media.column("tags").to_pylist())
        self._row_of = {m: i for i, m in enumerate(media.column("media_id").to_pylist())}
        self._has_caption = ~np.asarray(media.column("caption").is_null(), dtype=bool)
        self._has_image = np.any(np.asarray(self._image_embeddings) != 0, axis=1)
        self._duplicate = media.column("duplicate").to_numpy().astype(np.float64)
        self._uniqueness = media.column("uniqueness").to_numpy().astype(np.float64)
        self._levels = np.stack(
            [media.column(f"cluster_{g}").to_numpy().astype(np.int64) for g in GRANULARITIES],
            axis=1,
        )
        self._cluster_sizes = [np.bincount(self._levels[:, g]) for g in GRANULARITIES]
        self._by_label = _inverted(self._labels)
        self._by_tag = _inverted(self._tags)
        # Cluster ids look like the hosted API's UUIDs and sort like (granularity, index).
        id_prefix = uuid.uuid5(uuid.NAMESPACE_URL, f"vlbench:dataset:{info.id}").int >> 64
        self._writer = PageWriter(media, self._labels, self._tags, self._cluster_sizes, id_prefix)

    @classmethod
    def open(cls, path: Path, *, encoder: TextEncoder | None = None) -> SearchIndex:
        """Open a directory made by `import_dataset`; `DatasetError` when it is not one."""
        path = Path(path)
        info = read_info(path)
        try:
            media = pq.read_table(path / MEDIA_FILE)
            embeddings = np.load(path / EMBEDDINGS_FILE, mmap_mode="r")
            image_embeddings = np.load(path / IMAGE_EMBEDDINGS_FILE, mmap_mode="r")
            fts = FtsIndex(
                path / FTS_FILE, FTS_TABLE, n_docs=info.n_images, tokenizer=FTS_TOKENIZER
            )
        except (OSError, ValueError, sqlite3.Error, pa.ArrowException) as exc:
            raise DatasetError(f"incomplete dataset directory ({exc})", path=str(path)) from exc
        sizes = (media.num_rows, embeddings.shape[0], image_embeddings.shape[0])
        if sizes != (info.n_images,) * 3 or image_embeddings.shape != embeddings.shape:
            fts.close()
            raise DatasetError(
                f"dataset.json says {info.n_images} items, media has {media.num_rows}, "
                f"embeddings {embeddings.shape}, image embeddings {image_embeddings.shape}",
                path=str(path),
            )
        return cls(path, info, media, embeddings, fts, encoder, image_embeddings)

    def close(self) -> None:
        """Release the full-text index."""
        self._fts.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- lookups ---------------------------------------------------------------------------------

    @property
    def n_images(self) -> int:
        return int(self._media.num_rows)

    def n_clusters(self, granularity: int) -> int:
        """How many clusters the dataset has at a granularity (0..4)."""
        return len(self._cluster_sizes[_check_granularity(granularity)])

    def cluster_id(self, granularity: int, index: int) -> str:
        """The id of cluster `index` at `granularity`: a UUID string, stable per dataset."""
        return self._writer.cluster_id(granularity, index)

    def row_of(self, media_id: str) -> int | None:
        """The row of a media id, or None."""
        return self._row_of.get(media_id)

    def member(self, row: int, score: float = 0.0, score_type: ScoreType = "none") -> MemberMatch:
        """The media item at `row` as a `MemberMatch` with the given score."""
        values = {name: column[row].as_py() for name, column in self._columns.items()}
        return MemberMatch(
            row=row,
            score=score,
            score_type=score_type,
            labels=self._labels[row],
            tags=self._tags[row],
            **values,
        )

    # --- search ----------------------------------------------------------------------------------

    def search(self, req: SearchRequest) -> list[ClusterMatch]:
        """Every matching cluster, best first, each with its matching members best first."""
        matches = self._result(req)
        return self._clusters(window(matches, 0, len(matches.clusters)), req.granularity)

    def search_page(
        self, req: SearchRequest, page_number: int, page_size: int = PAGE_SIZE
    ) -> list[ClusterMatch]:
        """Clusters `page_number * page_size` onwards (0-based pages); [] past the end or below 0.

        Same as slicing `search(req)`, but builds only the page's records.
        """
        if page_number < 0 or page_size < 1:
            return []
        lo = page_number * page_size
        return self._clusters(window(self._result(req), lo, lo + page_size), req.granularity)

    def search_page_json(
        self, req: SearchRequest, page_number: int, page_size: int = PAGE_SIZE
    ) -> bytes:
        """The page `search_page` gives, as the explore answer's `clusters` JSON array.

        Written from bytes made once per media row (`runner.server.page`): the fast path.
        """
        if page_number < 0 or page_size < 1:
            return b"[]"
        lo = page_number * page_size
        page = window(self._result(req), lo, lo + page_size)
        return self._writer.write(page, req.granularity, req.entity_type)

    def is_quick(self, req: SearchRequest) -> bool:
        """Whether `req` costs less than handing it to a thread and back (~0.25 ms of CPU).

        So on a dataset of at most `QUICK_MAX_ITEMS` items, unless it must embed a query text
        first: a search without text, fts, visual, or caption/semantic with a cached embedding.
        """
        if self.n_images > QUICK_MAX_ITEMS:
            return False
        text = req.text
        if text is None or text.op in ("fts", "visual"):
            return True
        return self._encoder is not None and self._encoder.knows(text.value)

    def count_clusters(self, req: SearchRequest) -> int:
        """How many clusters `search(req)` returns."""
        return len(self._result(req).clusters)

    def count(self, req: SearchRequest) -> int:
        """How many media items match."""
        return len(self._result(req).rows)

    def matching_rows(self, req: SearchRequest) -> tuple[I64, F64, ScoreType]:
        """Every matching row best first (ties by row), its score and the score type."""
        matches = self._result(req)
        rows, scores = ranked(matches)
        return rows, scores, matches.score_type

    def export_rows(self, req: SearchRequest) -> pa.Table:
        """Every matching media item, best first: the columns in `EXPORT_COLUMNS`."""
        rows, _ = ranked(self._result(req))
        return self._media.select(list(EXPORT_COLUMNS)).take(pa.array(rows, type=pa.int64()))

    # --- internals -------------------------------------------------------------------------------

    def _result(self, req: SearchRequest) -> Matches:
        granularity = _check_granularity(req.granularity)
        req = _hashable(req)
        with self._lock:
            cached = self._cache.get(req)
            if cached is not None:
                self._cache.move_to_end(req)
                return cached
        rows, scores, score_type = self._match(req)
        result = collect(
            rows, scores, score_type, self._levels[:, granularity], self.n_clusters(granularity)
        )
        with self._lock:
            if req not in self._cache:
                self._cache[req] = result
                self._cache_bytes += result.nbytes
            # Bounded in entries and in bytes (a match of every row of a large dataset is big).
            while len(self._cache) > _CACHE_SIZE or (
                len(self._cache) > 1 and self._cache_bytes > _CACHE_BYTES
            ):
                self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes
        return result

    def _match(self, req: SearchRequest) -> tuple[I64, F64, ScoreType]:
        """Matching rows (ascending), their scores and the score type."""
        mask = self._filter_mask(req)
        text = req.text
        if text is None:
            rows = np.flatnonzero(mask).astype(np.int64)
            return rows, np.zeros(rows.size, dtype=np.float64), "none"
        if text.op == "fts":
            found, bm25 = self._fts.search(text.value)  # rows ascending
            keep = mask[found]
            return found[keep], bm25[keep], "bm25"
        cutoff = DEFAULT_CUTOFF if text.cutoff is None else float(text.cutoff)
        # caption: the AI caption's embedding; semantic, visual: the image-level embedding.
        vectors = self._embeddings if text.op == "caption" else self._image_embeddings
        present = self._has_caption if text.op == "caption" else self._has_image
        if text.op == "visual":
            query = np.asarray(vectors[self._row_of[text.value]], dtype=np.float32)
        else:
            query = self._query_vector(text.value)
        rows, distance = within_distance(query, vectors, mask & present, cutoff)
        return rows, distance, "cosine_distance"

    def _query_vector(self, text: str) -> npt.NDArray[np.float32]:
        """The query's embedding (the encoder caches it by text: a repeated query costs nothing)."""
        query = np.asarray(self._get_encoder().encode_query(text), dtype=np.float32)
        if query.shape != (self._embeddings.shape[1],):
            raise DatasetError(
                f"the encoder gives {query.shape} vectors, the dataset holds "
                f"{self._embeddings.shape[1]}-d embeddings",
                path=str(self.path),
            )
        return query

    def _filter_mask(self, req: SearchRequest) -> npt.NDArray[np.bool_]:
        n = self.n_images
        if req.entity_type != "IMAGES":
            return np.zeros(n, dtype=bool)
        mask = np.ones(n, dtype=bool)
        if req.labels_one_of is not None:
            mask &= _any_of(self._by_label, req.labels_one_of, n)
        if req.label_rules:
            mask &= label_rules_mask(req.label_rules, self._labels)
        if req.tags_is is not None:
            mask &= _any_of(self._by_tag, req.tags_is, n)
        # NaN compares false, so a NaN filter value matches nothing rather than everything.
        if req.duplicates is not None:
            mask &= self._duplicate >= float(req.duplicates)
        if req.uniqueness is not None:
            mask &= self._uniqueness >= float(req.uniqueness)
        return mask

    def _get_encoder(self) -> TextEncoder:
        with self._lock:
            if self._encoder is None:
                from runner.server.encoder import load_encoder

                self._encoder = load_encoder()
            return self._encoder

    def _clusters(self, result: Grouped, granularity: int) -> list[ClusterMatch]:
        sizes = self._cluster_sizes[granularity]
        out: list[ClusterMatch] = []
        for i in range(len(result.clusters)):
            index = int(result.clusters[i])
            a, b = int(result.bounds[i]), int(result.bounds[i + 1])
            members = tuple(
                self.member(row, score, result.score_type)
                for row, score in zip(
                    result.rows[a:b].tolist(), result.scores[a:b].tolist(), strict=True
                )
            )
            out.append(
                ClusterMatch(
                    cluster_id=self.cluster_id(granularity, index),
                    granularity=granularity,
                    n_images=int(sizes[index]),
                    score=float(result.cluster_scores[i]),
                    score_type=result.score_type,
                    members=members,
                )
            )
        return out


def within_distance(
    query: npt.NDArray[np.float32],
    matrix: npt.NDArray[np.float32],
    keep: npt.NDArray[np.bool_],
    cutoff: float,
) -> tuple[I64, F64]:
    """Rows of `matrix` (n, d; L2-normalised) within `cutoff` of `query` (ascending), distances.

    The distance is d = clip(1 - cos, 0, 2); rows where `keep` is False are left out. Exact: one
    matrix-vector product over every row. Ranking is the caller's (`runner.server.page`).
    """
    similarity = np.asarray(matrix) @ query
    distance = np.clip(1.0 - similarity.astype(np.float64), 0.0, 2.0)
    rows = np.flatnonzero(keep & (distance <= cutoff)).astype(np.int64, copy=False)
    return rows, distance[rows]


def _hashable(req: SearchRequest) -> SearchRequest:
    """The request with list filters as tuples (a caller may pass lists), so it can be cached."""
    labels, tags = req.labels_one_of, req.tags_is
    if isinstance(labels, list) or isinstance(tags, list):
        return dataclasses.replace(
            req,
            labels_one_of=None if labels is None else tuple(labels),
            tags_is=None if tags is None else tuple(tags),
        )
    return req


def _check_granularity(granularity: int) -> int:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is not one of {GRANULARITIES}")
    return granularity


def _tuples(values: list[list[str] | None]) -> list[tuple[str, ...] | None]:
    return [None if v is None else tuple(v) for v in values]


def _inverted(values: list[tuple[str, ...] | None]) -> dict[str, I64]:
    """value -> the rows holding it."""
    rows_of: dict[str, list[int]] = {}
    for row, items in enumerate(values):
        for item in items or ():
            rows_of.setdefault(item, []).append(row)
    return {k: np.asarray(v, dtype=np.int64) for k, v in rows_of.items()}


def _any_of(index: dict[str, I64], wanted: tuple[str, ...], n: int) -> npt.NDArray[np.bool_]:
    mask = np.zeros(n, dtype=bool)
    for value in wanted:
        rows = index.get(value)
        if rows is not None:
            mask[rows] = True
    return mask
