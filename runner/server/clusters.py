"""Clusters at five nested granularities, and per-item duplicate scores, from caption embeddings.

Scheme (top-down, so that nesting holds by construction and the cost stays bounded):

- Identical vectors are collapsed first and carried as weights: identical captions always share
  every cluster, and a dataset of many repeated captions costs what its distinct captions cost.
- Level 4 (coarsest): spherical k-means over all items with k = n / 256 (fitted on a sample of at
  most 20,000 distinct vectors, then every item assigned to its nearest centroid).
- Levels 3, 2, 1: each cluster of the coarser level is split on its own by spherical k-means into
  about size / 64, size / 16 and size / 4 parts, so a cluster is always inside its parent.
- Level 0 (finest): near-duplicate groups inside each level-1 cluster, formed greedily in row order:
  the first unassigned item leads a group and takes every unassigned item whose cosine similarity
  to it is >= `NEAR_DUPLICATE_SIMILARITY` (0.9). No chaining, so a group's diameter stays small.

Cluster indices at each level are numbered by their first row (import order), so index order is
a stable, meaningful tie-break.

Duplicate score of an item = its highest cosine similarity to another item (1.0 when an identical
caption exists; 0.0 in a dataset of one item), clipped to 0..1; uniqueness = 1 - duplicate score
(the cosine distance to the nearest other item). Exact (blocked matrix products over all distinct
vectors) up to `EXACT_DUPLICATE_LIMIT` (8,192) distinct vectors; above it, the nearest other item is
searched within the item's level-4 cluster only — near duplicates (similarity >= 0.9) share their
coarse cluster almost always, so the filters behave the same, while the cost stays near n * 256.
Every step is seeded: the same embeddings give the same clusters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "EXACT_DUPLICATE_LIMIT",
    "LEVEL_SIZES",
    "NEAR_DUPLICATE_SIMILARITY",
    "Clustering",
    "build_clusters",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# Target mean cluster size (in items) of levels 1..4; level 0 is near-duplicate groups.
LEVEL_SIZES: Final = {1: 4, 2: 16, 3: 64, 4: 256}
NEAR_DUPLICATE_SIMILARITY: Final = 0.9
EXACT_DUPLICATE_LIMIT: Final = 8192
_FIT_SAMPLE: Final = 20_000
_KMEANS_ITERATIONS: Final = 12
_BLOCK_ROWS: Final = 2048


@dataclass(frozen=True, slots=True)
class Clustering:
    """Cluster index of every item at each granularity, and its duplicate score.

    `levels[:, g]` is the cluster index (0..k_g-1, numbered by first row) at granularity g.
    `duplicate[i]` is the item's best cosine similarity to another item, 0..1.
    `exact_duplicates` says whether that was searched over the whole dataset.
    """

    levels: npt.NDArray[np.int32]
    duplicate: F32
    exact_duplicates: bool


def build_clusters(embeddings: F32, *, seed: int = 0) -> Clustering:
    """Cluster the (n, d) L2-normalised embeddings at granularities 0..4; see the module docstring.

    Rows of zeros (items without a caption) are clustered like any vector: they share clusters.
    """
    n = int(embeddings.shape[0])
    if n == 0:
        return Clustering(
            np.zeros((0, 5), dtype=np.int32), np.zeros(0, dtype=np.float32), exact_duplicates=True
        )
    unique, inverse, counts = _collapse(embeddings)
    weights = counts.astype(np.float64)
    rng = np.random.default_rng(seed)
    u_levels = np.zeros((unique.shape[0], 5), dtype=np.int64)
    u_levels[:, 4] = _kmeans(unique, weights, _k_for(n, LEVEL_SIZES[4]), rng)
    for level in (3, 2, 1):
        u_levels[:, level] = _split(
            unique, weights, u_levels[:, level + 1], LEVEL_SIZES[level], rng
        )
    u_levels[:, 0] = _near_duplicate_groups(unique, u_levels[:, 1])
    levels = np.empty((n, 5), dtype=np.int32)
    for level in range(5):
        levels[:, level] = _number_by_first_row(u_levels[inverse, level])
    exact = unique.shape[0] <= EXACT_DUPLICATE_LIMIT
    scope = np.zeros(unique.shape[0], dtype=np.int64) if exact else u_levels[:, 4]
    u_best = _best_other_similarity(unique, counts, scope)
    duplicate = np.clip(u_best[inverse], 0.0, 1.0).astype(np.float32)
    return Clustering(levels, duplicate, exact_duplicates=exact)


def _collapse(x: F32) -> tuple[F32, I64, I64]:
    """Distinct rows of x (in first-row order), each row's index into them, and their counts."""
    rows = np.ascontiguousarray(x)
    # Group rows by a random projection (one float64 sort instead of a byte-wise sort of rows),
    # then check that every row equals its group's first row; a collision falls back to bytes.
    projection = np.random.default_rng(12345).normal(size=rows.shape[1])
    keys = rows.astype(np.float64) @ projection
    _, first, inverse, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.ravel()
    if not np.array_equal(rows, rows[first[inverse]]):
        byte_keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
        _, first, inverse, counts = np.unique(
            byte_keys, return_index=True, return_inverse=True, return_counts=True
        )
        inverse = inverse.ravel()
    # np.unique orders by key; renumber by first appearance so results follow the row order.
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rows[first[order]], rank[inverse].astype(np.int64), counts[order].astype(np.int64)


def _k_for(weight: float, size: int) -> int:
    return max(1, round(weight / size))


def _kmeans(x: F32, w: npt.NDArray[np.float64], k: int, rng: np.random.Generator) -> I64:
    """Weighted spherical k-means; returns each row's cluster (0..k'-1, k' <= k, none empty)."""
    m = x.shape[0]
    k = min(k, m)
    if k <= 1:
        return np.zeros(m, dtype=np.int64)
    fit = x
    fit_w = w
    if m > _FIT_SAMPLE:
        pick = np.sort(rng.choice(m, size=_FIT_SAMPLE, replace=False))
        fit, fit_w = x[pick], w[pick]
    start = rng.choice(fit.shape[0], size=k, replace=False, p=fit_w / fit_w.sum())
    centroids = fit[np.sort(start)].astype(np.float32)
    labels = np.full(fit.shape[0], -1, dtype=np.int64)
    for _ in range(_KMEANS_ITERATIONS):
        new = _assign(fit, centroids)
        if np.array_equal(new, labels):
            break
        labels = new
        centroids = _centroids(fit, fit_w, labels, centroids)
    final = _assign(x, centroids)
    # Renumber 0..k'-1 over the clusters that kept members.
    present = np.bincount(final, minlength=k) > 0
    return (np.cumsum(present) - 1)[final].astype(np.int64)


def _assign(x: F32, centroids: F32) -> I64:
    out = np.empty(x.shape[0], dtype=np.int64)
    for lo, hi in _blocks(x.shape[0]):
        out[lo:hi] = np.argmax(x[lo:hi] @ centroids.T, axis=1)
    return out


def _centroids(x: F32, w: npt.NDArray[np.float64], labels: I64, previous: F32) -> F32:
    k = previous.shape[0]
    # Weighted sums per cluster: rows sorted by cluster, each run added up (O(m d); a dense
    # (k, m) membership matrix product would cost O(k m d)).
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    present = counts > 0
    starts = (np.cumsum(counts) - counts)[present]
    sums = np.zeros((k, x.shape[1]), dtype=np.float32)
    sums[present] = np.add.reduceat(x[order] * w[order, None].astype(np.float32), starts, axis=0)
    norms = np.linalg.norm(sums, axis=1)
    # An emptied cluster (or one whose members cancel out) keeps its old centroid.
    alive = norms > 1e-6
    out = previous.copy()
    out[alive] = sums[alive] / norms[alive, None]
    return out


def _split(
    x: F32, w: npt.NDArray[np.float64], parents: I64, size: int, rng: np.random.Generator
) -> I64:
    """Split each parent cluster on its own into about weight / size parts."""
    out = np.empty(x.shape[0], dtype=np.int64)
    next_id = 0
    for members in _groups(parents):
        k = _k_for(float(w[members].sum()), size)
        local = (
            _kmeans(x[members], w[members], k, rng) if k > 1 else np.zeros(members.size, np.int64)
        )
        out[members] = local + next_id
        next_id += int(local.max()) + 1
    return out


def _near_duplicate_groups(x: F32, parents: I64) -> I64:
    """Greedy leader groups (similarity >= NEAR_DUPLICATE_SIMILARITY) inside each parent."""
    out = np.empty(x.shape[0], dtype=np.int64)
    next_id = 0
    for members in _groups(parents):
        if members.size > _BLOCK_ROWS:
            next_id = _leader_groups_large(x, members, out, next_id)
            continue
        vectors = x[members]
        close = vectors @ vectors.T >= NEAR_DUPLICATE_SIMILARITY
        np.fill_diagonal(close, True)
        if members.size == 1 or close.sum() == members.size:
            # No near duplicates here (the common case): every item is its own group.
            out[members] = np.arange(next_id, next_id + members.size)
            next_id += members.size
            continue
        free = np.ones(members.size, dtype=bool)
        for leader in range(members.size):
            if free[leader]:
                taken = close[leader] & free
                out[members[taken]] = next_id
                free &= ~taken
                next_id += 1
    return out


def _leader_groups_large(x: F32, members: I64, out: I64, next_id: int) -> int:
    """The same greedy grouping for a parent too large for its (m, m) similarity matrix."""
    vectors = x[members]
    free = np.ones(members.size, dtype=bool)
    for leader in range(members.size):
        if free[leader]:
            candidates = np.flatnonzero(free)
            taken = candidates[vectors[candidates] @ vectors[leader] >= NEAR_DUPLICATE_SIMILARITY]
            taken = np.union1d(taken, [leader])
            out[members[taken]] = next_id
            free[taken] = False
            next_id += 1
    return next_id


def _best_other_similarity(x: F32, counts: I64, scope: I64) -> F32:
    """Each distinct row's best similarity to another item sharing its scope value."""
    best = np.full(x.shape[0], -np.inf, dtype=np.float32)
    for members in _groups(scope):
        vectors = x[members]
        for lo, hi in _blocks(members.size):
            sims = vectors[lo:hi] @ vectors.T
            # A row is not its own neighbour; an identical other item (count > 1) counts as 1.0.
            sims[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
            best[members[lo:hi]] = sims.max(axis=1)
    best[counts > 1] = 1.0
    best[~np.isfinite(best)] = 0.0
    return best


def _groups(labels: I64) -> Iterator[I64]:
    """Row indices of each label value, labels in ascending order, rows ascending."""
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    yield from np.split(order, bounds)


def _blocks(n: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, _BLOCK_ROWS):
        yield lo, min(n, lo + _BLOCK_ROWS)


def _number_by_first_row(labels: I64) -> npt.NDArray[np.int32]:
    """Renumber cluster labels 0..k-1 in order of each cluster's first row."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse.ravel()].astype(np.int32)
