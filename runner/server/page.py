"""A search's matches grouped into clusters, and a page of them written as the explore answer.

    grouped = group(rows, scores, "bm25", levels[:, granularity])   # arrays, no Python loop
    body = writer.write(grouped, granularity, 0, 100, "IMAGES")      # the `clusters` JSON array

Grouping: clusters are ordered by their best member (score descending for bm25, ascending for
distances), ties by cluster index; members best first, ties by row (the order they come in).

Writing: everything in a preview but its score is fixed per media row, so `PageWriter` makes each
row's JSON once (two byte strings around the score) and a page is those bytes joined with the
page's scores (one `orjson.dumps` of all of them): no record or dict per member. A cluster's
`captions` are its members' distinct non-empty captions in member order; its `labels` and
`user_tags` the sorted union of its members' (null when empty); preview `labels` as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa

from runner.server.query import ScoreType

__all__ = ["Grouped", "PageWriter", "group"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_NULL: Final = b"null"
_EMPTY_LIST: Final = b"[]"


@dataclass(frozen=True, slots=True)
class Grouped:
    """One request's matches, grouped: clusters best first, members best first."""

    rows: I64  # matching rows in member order (cluster by cluster)
    scores: F64  # their scores, same order
    score_type: ScoreType
    clusters: I64  # cluster indices at the granularity, best first
    cluster_scores: F64
    bounds: I64  # members of clusters[i] are rows[bounds[i]:bounds[i + 1]]
    ranked_rows: I64  # matching rows best first, ties by row (the export order)
    ranked_scores: F64


def group(rows: I64, scores: F64, score_type: ScoreType, level: I64) -> Grouped:
    """Group rows (best first, ties by row) by their cluster in `level` (row -> cluster index)."""
    if rows.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Grouped(
            rows, scores, score_type, empty, np.zeros(0), np.zeros(1, np.int64), rows, scores
        )
    cluster_of = level[rows]
    clusters, first, inverse = np.unique(cluster_of, return_index=True, return_inverse=True)
    # rows are best first, so a cluster's first position holds its best member.
    best = scores[first]
    order = np.lexsort((clusters, -best if score_type == "bm25" else best))
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    member_rank = rank[inverse.ravel()]
    positions = np.argsort(member_rank, kind="stable")
    bounds = np.zeros(order.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(member_rank, minlength=order.size), out=bounds[1:])
    return Grouped(
        rows=rows[positions],
        scores=scores[positions],
        score_type=score_type,
        clusters=clusters[order].astype(np.int64, copy=False),
        cluster_scores=best[order],
        bounds=bounds,
        ranked_rows=rows,
        ranked_scores=scores,
    )


class PageWriter:
    """Writes pages of grouped matches of one dataset as JSON; see the module docstring.

    `labels` and `tags` are every row's (None: none); `cluster_sizes[g][i]` is the size of
    cluster i at granularity g; `id_prefix` the first 64 bits of every cluster id (the rest are
    the granularity and the index, so ids sort like (granularity, index)).
    """

    def __init__(
        self,
        media: pa.Table,
        labels: Sequence[tuple[str, ...] | None],
        tags: Sequence[tuple[str, ...] | None],
        cluster_sizes: Sequence[I64],
        id_prefix: int,
    ) -> None:
        self._labels = labels
        self._tags = tags
        self._sizes = cluster_sizes
        hex_prefix = f"{id_prefix:016x}"
        self._id_head = f"{hex_prefix[:8]}-{hex_prefix[8:12]}-{hex_prefix[12:]}".encode()
        self._head: list[bytes] = []
        self._tail: list[bytes] = []
        self._caption: list[bytes | None] = []
        columns = [
            media.column(name).to_pylist()
            for name in ("media_id", "media_uri", "caption", "file_name", "width", "height")
        ]
        for media_id, uri, caption, file_name, width, height, row_labels in zip(
            *columns, labels, strict=True
        ):
            head = orjson.dumps(
                {
                    "type": "IMAGE",
                    "media_id": media_id,
                    "media_uri": uri,
                    # No thumbnails are made locally: the thumbnail is the image itself.
                    "media_thumb_uri": uri,
                    "caption": caption,
                    "file_name": file_name,
                    "relevance_score": 0,
                }
            )
            self._head.append(head[: -len(b"0}")])
            self._tail.append(
                orjson.dumps(
                    {"width": width, "height": height, "labels": list(row_labels or ()) or None}
                )[1:]
            )
            self._caption.append(orjson.dumps(caption) if caption else None)
        # A cluster of one row (the most common kind) writes these around its preview.
        self._single_captions = [
            b'"captions":[' + (c or b"") + b'],"previews":[' for c in self._caption
        ]
        self._single_unions = [
            b'],"labels":' + _union(labels, [row]) + b',"user_tags":' + _union(tags, [row]) + b"},"
            for row in range(len(self._head))
        ]

    def cluster_id(self, granularity: int, index: int) -> str:
        """The id of cluster `index` at `granularity` (a UUID string)."""
        return self._cluster_id(granularity, index).decode()

    def write(self, g: Grouped, granularity: int, lo: int, hi: int, entity_type: str) -> bytes:
        """Clusters lo..hi-1 of `g` (at `granularity`) as a JSON array, members best first."""
        hi = min(hi, len(g.clusters))
        if lo >= hi:
            return _EMPTY_LIST
        first, last = int(g.bounds[lo]), int(g.bounds[hi])
        rows: list[int] = g.rows[first:last].tolist()
        member_scores = _numbers(g.scores[first:last])
        cluster_scores = _numbers(g.cluster_scores[lo:hi])
        starts: list[int] = (g.bounds[lo : hi + 1] - first).tolist()
        indices: list[int] = g.clusters[lo:hi].tolist()
        sizes: list[int] = self._sizes[granularity][g.clusters[lo:hi]].tolist()
        open_cluster = b'{"cluster_id":"%s-%04x-' % (self._id_head, granularity)
        cluster_type = b'","type":"' + entity_type.encode() + b'","n_images":'
        threshold = b',"similarity_threshold":"%d","relevance_score":' % granularity
        score_type = b',"relevance_score_type":"' + g.score_type.encode() + b'",'
        head, tail, caption = self._head, self._tail, self._caption
        out: list[bytes] = [b"["]
        for k, index in enumerate(indices):
            start, end = starts[k], starts[k + 1]
            out += (
                open_cluster,
                b"%012x" % index,
                cluster_type,
                b"%d" % sizes[k],
                threshold,
                cluster_scores[k],
                score_type,
            )
            if end - start == 1:  # most clusters: everything but the scores is the row's own
                row = rows[start]
                out += (
                    self._single_captions[row],
                    head[row],
                    member_scores[start],
                    score_type,
                    tail[row],
                    self._single_unions[row],
                )
                continue
            members = rows[start:end]
            found = dict.fromkeys(c for row in members if (c := caption[row]) is not None)
            out += (b'"captions":[', b",".join(found), b'],"previews":[')
            for m, row in enumerate(members, start=start):
                out += (head[row], member_scores[m], score_type, tail[row], b",")
            out[-1] = b'],"labels":'
            out += (
                _union(self._labels, members),
                b',"user_tags":',
                _union(self._tags, members),
                b"},",
            )
        out[-1] = out[-1][:-1] + b"]"
        return b"".join(out)

    def _cluster_id(self, granularity: int, index: int) -> bytes:
        return b"%s-%04x-%012x" % (self._id_head, granularity, index)


def _numbers(values: F64) -> list[bytes]:
    """Each float as JSON (orjson's spelling, the same as a whole response's)."""
    return orjson.dumps(values.tolist())[1:-1].split(b",")


def _union(values: Sequence[tuple[str, ...] | None], members: list[int]) -> bytes:
    """The sorted union of the members' values as JSON, or null when there is none."""
    items = {item for row in members if (v := values[row]) for item in v}
    return orjson.dumps(sorted(items)) if items else _NULL
