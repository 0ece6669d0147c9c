"""A search's matches grouped into clusters, and a page of them written as the explore answer.

    matches = collect(rows, scores, "bm25", levels[:, g], n_clusters)  # arrays, no Python loop
    body = writer.write(window(matches, 0, 100), g, "IMAGES")         # the `clusters` JSON array

Grouping: clusters are ordered by their best member (score descending for bm25, ascending for
distances), ties by cluster index; members best first, ties by row. A page sorts only its own
clusters and members (`window`); the full ranking is made only for exports (`ranked`).

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

__all__ = ["Grouped", "Matches", "PageWriter", "collect", "ranked", "window"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_NULL: Final = b"null"
_EMPTY_LIST: Final = b"[]"


@dataclass(frozen=True, slots=True)
class Matches:
    """One request's matches in row order, and the clusters holding them (at one granularity)."""

    rows: I64  # matching rows, ascending
    scores: F64  # their scores
    score_type: ScoreType
    cluster_of: I64  # each match's cluster index
    clusters: I64  # the clusters holding a match, ascending index
    best: F64  # each such cluster's best goodness (higher is better; see `_goodness`)

    @property
    def nbytes(self) -> int:
        arrays = (self.rows, self.scores, self.cluster_of, self.clusters, self.best)
        return sum(a.nbytes for a in arrays)


@dataclass(frozen=True, slots=True)
class Grouped:
    """Ranked clusters (a window of them) with their matching members, both best first."""

    rows: I64  # the clusters' matching rows in member order (cluster by cluster)
    scores: F64  # their scores, same order
    score_type: ScoreType
    clusters: I64  # cluster indices, best first
    cluster_scores: F64
    bounds: I64  # members of clusters[i] are rows[bounds[i]:bounds[i + 1]]


def collect(rows: I64, scores: F64, score_type: ScoreType, level: I64, n_clusters: int) -> Matches:
    """The matches (rows ascending) with their clusters in `level` (row -> cluster index)."""
    cluster_of = level[rows]
    best = np.full(n_clusters, -np.inf)
    np.maximum.at(best, cluster_of, _goodness(scores, score_type))
    clusters = np.flatnonzero(best > -np.inf)
    return Matches(rows, scores, score_type, cluster_of, clusters, best[clusters])


def window(m: Matches, lo: int, hi: int) -> Grouped:
    """Clusters ranked lo..hi-1 (0-based) and their members; ranks past the end are left out.

    Only the window is sorted: the clusters that can rank before `hi` are found by a partition
    (O(clusters)), then sorted; so a first page costs about what the matching cost.
    """
    hi = min(hi, len(m.clusters))
    lo = max(0, lo)
    if lo >= hi:
        empty = np.zeros(0, dtype=np.int64)
        return Grouped(empty, np.zeros(0), m.score_type, empty, np.zeros(0), np.zeros(1, np.int64))
    chosen = _top_clusters(m.clusters, m.best, hi)[lo:]
    rank = np.full(int(m.clusters[-1]) + 1, -1, dtype=np.int64)
    rank[m.clusters[chosen]] = np.arange(chosen.size)
    member_rank = rank[m.cluster_of]
    members = np.flatnonzero(member_rank >= 0)
    goodness = _goodness(m.scores[members], m.score_type)
    # Members by cluster rank, then best first; lexsort is stable, so ties stay in row order.
    members = members[np.lexsort((-goodness, member_rank[members]))]
    bounds = np.zeros(chosen.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(member_rank[members], minlength=chosen.size), out=bounds[1:])
    best = m.best[chosen]
    return Grouped(
        rows=m.rows[members],
        scores=m.scores[members],
        score_type=m.score_type,
        clusters=m.clusters[chosen],
        cluster_scores=best if m.score_type == "bm25" else -best,
        bounds=bounds,
    )


def ranked(m: Matches) -> tuple[I64, F64]:
    """Every matching row best first, ties by row, and its score (the export order)."""
    order = np.argsort(-_goodness(m.scores, m.score_type), kind="stable")
    return m.rows[order], m.scores[order]


def _top_clusters(clusters: I64, best: F64, hi: int) -> I64:
    """Positions of the `hi` best clusters, best first (ties: lower cluster index first)."""
    if hi * 4 < clusters.size:
        # Every cluster as good as the hi-th best: a superset of the top hi, whatever the ties.
        kth = best[np.argpartition(-best, hi - 1)[hi - 1]]
        candidates = np.flatnonzero(best >= kth)
    else:
        candidates = np.arange(clusters.size)
    order = np.lexsort((clusters[candidates], -best[candidates]))
    top: I64 = candidates[order[:hi]]
    return top


def _goodness(scores: F64, score_type: ScoreType) -> F64:
    """Scores turned so that higher is better: bm25 as is, distances (and "none") negated."""
    return scores if score_type == "bm25" else -scores


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
                    # Only object previews carry a box; these are images.
                    "bounding_box": None,
                    "relevance_score": 0,
                }
            )
            self._head.append(head[: -len(b"0}")])
            self._tail.append(
                orjson.dumps(
                    {"width": width, "height": height, "labels": list(row_labels or ()) or None}
                )[1:]
            )
            # orjson's bytes keep their 4 KiB buffer: copy each kept one to its own size.
            self._caption.append(bytes(memoryview(orjson.dumps(caption))) if caption else None)
        # A cluster of one row (the most common kind) writes these around its preview.
        self._single_captions = [
            (b'"captions":[' + c + b"]" if c else b'"captions":null') + b',"previews":['
            for c in self._caption
        ]
        self._single_unions = [
            b'],"labels":' + _union(labels, [row]) + b',"user_tags":' + _union(tags, [row]) + b"},"
            for row in range(len(self._head))
        ]

    def cluster_id(self, granularity: int, index: int) -> str:
        """The id of cluster `index` at `granularity` (a UUID string)."""
        return self._cluster_id(granularity, index).decode()

    def write(self, g: Grouped, granularity: int, entity_type: str) -> bytes:
        """The clusters of `g` (at `granularity`) as a JSON array, members best first."""
        if not len(g.clusters):
            return _EMPTY_LIST
        rows: list[int] = g.rows.tolist()
        member_scores = _numbers(g.scores)
        cluster_scores = _numbers(g.cluster_scores)
        starts: list[int] = g.bounds.tolist()
        indices: list[int] = g.clusters.tolist()
        sizes: list[int] = self._sizes[granularity][g.clusters].tolist()
        open_cluster = b'{"cluster_id":"%s-%04x-' % (self._id_head, granularity)
        cluster_type = b'","type":"' + entity_type.encode() + b'","n_images":'
        # Datasets here hold images only.
        threshold = (
            b',"n_objects":0,"n_videos":0,"similarity_threshold":"%d","relevance_score":'
            % granularity
        )
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
            captions = b"[" + b",".join(found) + b"]" if found else _NULL
            out += (b'"captions":', captions, b',"previews":[')
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
