"""A page written from per-row bytes says what the search's records say, field for field."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers_server import import_small_dataset

from runner.server.index import SearchIndex
from runner.server.page import collect, ranked, window
from runner.server.query import ScoreType, SearchRequest, TextQuery
from runner.server.shapes import cluster_json

RED = str(uuid.uuid5(uuid.NAMESPACE_DNS, "red"))
BLUE = str(uuid.uuid5(uuid.NAMESPACE_DNS, "blue"))
CAPTIONS = [
    "A dog on a porch.",
    "A dog on a porch.",  # identical captions share every cluster: clusters of several members
    "A dog on a porch.",
    'Quotes " and \\ backslashes, unicode: café 東京 🐶',
    "",  # an empty caption: no entry in a cluster's captions
    None,  # no caption at all
    "Two cats on a sofa.",
    "Two cats on a sofa.",
]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchIndex]:
    rows: list[dict[str, Any]] = []
    for i in range(60):
        caption = CAPTIONS[i % len(CAPTIONS)]
        row: dict[str, Any] = {"file_name": f"img-{i}.jpg", "caption": caption}
        if i % 3:
            row["labels"] = ["dog", "porch"] if i % 2 else ["zebra", "cat"]
        if i % 4 == 0:
            row["tags"] = [BLUE, RED] if i % 8 else [RED]
        if i % 5:
            row.update(width=640 + i, height=480, media_uri=f"https://example.invalid/{i}.jpg")
        rows.append(row)
    base = tmp_path_factory.mktemp("page")
    import_small_dataset(base, "pages", rows)
    with SearchIndex.open(base / "pages") as opened:
        yield opened


REQUESTS = [pytest.param(SearchRequest(granularity=g), id=f"all-g{g}") for g in range(5)] + [
    pytest.param(SearchRequest(text=TextQuery("fts", "dog cats")), id="fts"),
    pytest.param(SearchRequest(granularity=2, text=TextQuery("fts", "sofa")), id="fts-g2"),
    pytest.param(SearchRequest(text=TextQuery("semantic", "A dog on a porch.")), id="semantic"),
    pytest.param(SearchRequest(labels_one_of=("dog",), tags_is=(RED,)), id="filters"),
    pytest.param(SearchRequest(text=TextQuery("fts", "nothing-here")), id="no-match"),
]


@pytest.mark.parametrize("req", REQUESTS)
@pytest.mark.parametrize("page_size", [1, 3, 100])
def test_json_page_equals_the_records(
    index: SearchIndex, req: SearchRequest, page_size: int
) -> None:
    pages = 0
    for page in range(60):
        want = [cluster_json(c, "IMAGES") for c in index.search_page(req, page, page_size)]
        got = json.loads(index.search_page_json(req, page, page_size))
        assert got == want, f"page {page}"
        if not want:
            break
        pages += 1
    assert pages == -(-index.count_clusters(req) // page_size)


def test_several_members_and_odd_captions_are_covered(index: SearchIndex) -> None:
    clusters = json.loads(index.search_page_json(SearchRequest(), 0))
    assert any(len(c["previews"]) > 1 for c in clusters)
    captions = {p["caption"] for c in clusters for p in c["previews"]}
    assert {"", None, CAPTIONS[3]} <= captions


def test_out_of_range_pages_are_empty(index: SearchIndex) -> None:
    assert index.search_page_json(SearchRequest(), -1) == b"[]"
    assert index.search_page_json(SearchRequest(), 10_000) == b"[]"
    assert index.search_page_json(SearchRequest(), 0, 0) == b"[]"


def test_cluster_ids_are_uuids_that_sort_like_granularity_then_index(index: SearchIndex) -> None:
    ids = [index.cluster_id(g, i) for g in range(5) for i in (0, 1, 255, 2**40)]
    assert [str(uuid.UUID(x)) for x in ids] == ids
    assert sorted(ids) == ids


@pytest.mark.parametrize("score_type", ["bm25", "cosine_distance", "none"])
@pytest.mark.parametrize("seed", range(4))
def test_window_ranks_as_a_full_sort(score_type: ScoreType, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_clusters = 500, 120
    level = rng.integers(0, n_clusters, n)
    rows = np.sort(rng.choice(n, size=300, replace=False))
    # Few distinct values: ties between members and between clusters everywhere.
    scores = rng.integers(0, 6, rows.size).astype(np.float64) / 4
    if score_type == "none":
        scores[:] = 0.0
    sign = -1.0 if score_type == "bm25" else 1.0  # bm25: higher first; others: lower first
    by_cluster: dict[int, list[tuple[float, int]]] = {}
    for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
        by_cluster.setdefault(int(level[row]), []).append((sign * score, row))
    # Clusters by their best score, ties by cluster index (not by the best member's row).
    expected = sorted((min(ms)[0], c, sorted(ms)) for c, ms in by_cluster.items())
    matches = collect(rows, scores, score_type, level, n_clusters)
    for lo, hi in [(0, 1), (0, 10), (3, 17), (50, 60), (0, 1000), (100, 200)]:
        got = window(matches, lo, hi)
        want = expected[lo:hi]
        assert got.clusters.tolist() == [c for _, c, _ in want]
        assert (sign * got.cluster_scores).tolist() == [best for best, _, _ in want]
        members = [row for _, _, ms in want for _, row in ms]
        assert got.rows.tolist() == members
        assert np.diff(got.bounds).tolist() == [len(ms) for _, _, ms in want]
    all_rows, _ = ranked(matches)
    assert all_rows.tolist() == [
        row for _, row in sorted(zip((sign * scores).tolist(), rows.tolist(), strict=True))
    ]
