"""Searching a dataset: full-text, semantic, filters, clusters, pages, exports, hostile input."""

from __future__ import annotations

import json
import math
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import pytest

from runner.errors import DatasetError
from runner.server import clusters as clusters_module
from runner.server import index as index_module
from runner.server.clusters import NEAR_DUPLICATE_SIMILARITY, build_clusters
from runner.server.dataset import EMBEDDINGS_FILE, FTS_FILE, MEDIA_FILE, import_dataset
from runner.server.demo import demo_images, labels_mentioned
from runner.server.encoder import Encoder, load_encoder
from runner.server.fts import MAX_TERMS, fts_match_expression, fts_terms
from runner.server.index import EXPORT_COLUMNS, SearchIndex
from runner.server.query import (
    DEFAULT_CUTOFF,
    ClusterMatch,
    SearchRequest,
    TextOp,
    TextQuery,
)

RED = str(uuid.uuid5(uuid.NAMESPACE_DNS, "red"))
BLUE = str(uuid.uuid5(uuid.NAMESPACE_DNS, "blue"))

# Hand-written captions first (rows 0..), then real COCO captions.
HANDMADE = [
    "A dog sits on the porch.",
    "Three dogs are running in a park.",
    "A zebra grazing in a field.",
    "A pizza with olives on a wooden table.",
    "A zebra next to a pizza truck.",
    "A cat sleeping near the window.",
    "A cat sleeping near the window.",  # an exact duplicate
    "Runners run a marathon near the river.",
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_encoder()


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"file_name": f"hand-{i}.jpg", "caption": c, "labels": labels_mentioned([c]) or None}
        for i, c in enumerate(HANDMADE)
    ]
    for image in demo_images()[:240]:
        out.append(
            {
                "file_name": image.file_name,
                "caption": image.captions[0],
                "labels": labels_mentioned(image.captions) or None,
                "width": image.width,
                "height": image.height,
            }
        )
    out.append({"file_name": "no-caption.jpg", "labels": ["dog"]})
    for i, row in enumerate(out):
        tags = [t for t, every in ((RED, 3), (BLUE, 5)) if i % every == 0]
        row["tags"] = tags or None
    return out


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> Path:
    base = tmp_path_factory.mktemp("index")
    src = base / "items.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import_dataset(src, "idx", base / "ds", encoder=load_encoder(), chunk_rows=100)
    return base / "ds"


@pytest.fixture(scope="module")
def index(index_dir: Path, encoder: Encoder) -> Iterator[SearchIndex]:
    with SearchIndex.open(index_dir, encoder=encoder) as opened:
        yield opened


@pytest.fixture(scope="module")
def levels(index_dir: Path) -> npt.NDArray[np.int64]:
    media = pq.read_table(index_dir / MEDIA_FILE)
    return np.stack([media.column(f"cluster_{g}").to_numpy() for g in range(5)], axis=1)


def text(op: TextOp, value: str, cutoff: float | None = None, **kw: Any) -> SearchRequest:
    return SearchRequest(text=TextQuery(op, value, cutoff), **kw)


def matched(index: SearchIndex, req: SearchRequest) -> list[int]:
    return [int(r) for r in index.matching_rows(req)[0]]


# --- full text --------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["dogs", "dog", "DOG!"])
def test_fts_stems_so_plural_and_singular_find_each_other(index: SearchIndex, query: str) -> None:
    found = set(matched(index, text("fts", query)))
    assert {0, 1} <= found  # "A dog sits", "Three dogs are running"


def test_fts_stems_verbs(index: SearchIndex) -> None:
    assert {1, 7} <= set(matched(index, text("fts", "running")))  # running ~ run ~ runners? run


def test_fts_is_an_or_of_the_terms_ranked_by_bm25(index: SearchIndex) -> None:
    zebra = set(matched(index, text("fts", "zebra")))
    pizza = set(matched(index, text("fts", "pizza")))
    rows, scores, score_type = index.matching_rows(text("fts", "zebra pizza"))
    assert score_type == "bm25"
    assert set(rows.tolist()) == zebra | pizza
    assert rows[0] == 4  # the only caption holding both terms ranks first
    assert all(s > 0 for s in scores)
    keys = [(-s, r) for r, s in zip(rows.tolist(), scores.tolist(), strict=True)]
    assert keys == sorted(keys)  # higher -bm25 first, ties by row


@pytest.mark.parametrize(
    "value, expected",
    [
        ('dog" OR "cat', ["dog", "or", "cat"]),
        ("NEAR(zebra, 2) *", ["near", "zebra", "2"]),
        ("a\x00b", ["a", "b"]),
        ("snake_case-word", ["snake", "case", "word"]),
        ("", []),
        ('" * ( ) : ^ -', []),
    ],
)
def test_fts_terms_are_plain_words(value: str, expected: list[str]) -> None:
    assert fts_terms(value) == expected
    expression = fts_match_expression(value)
    assert expression == (" OR ".join(f'"{t}"' for t in expected) if expected else None)


def test_fts_query_terms_are_capped() -> None:
    words = [f"w{i}" for i in range(MAX_TERMS * 2)]
    assert fts_terms(" ".join(words)) == words[:MAX_TERMS]


def test_fts_operators_are_words_not_syntax(index: SearchIndex) -> None:
    assert matched(index, text("fts", "NEAR(")) == matched(index, text("fts", "near"))
    assert matched(index, text("fts", "zebra*")) == matched(index, text("fts", "zebra"))
    assert matched(index, text("fts", "*")) == []


HOSTILE = [
    '"',
    '""',
    "NEAR(",
    "NEAR(a b",
    "*",
    "a*",
    "\x00",
    "dog\x00cat",
    "x" * 5000,
    " ".join(["zebra"] * 1000),
    "AND",
    "OR NOT",
    "-dog",
    "caption: dog",
    "^dog",
    "{caption}: x",
    "'; DROP TABLE captions; --",
    "🐶 dog",
    "\u202e\ufeff",
    "",
    "   ",
]


@pytest.mark.parametrize("op", ["fts", "semantic", "caption"])
@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:30])
def test_hostile_text_never_raises(index: SearchIndex, op: TextOp, value: str) -> None:
    req = text(op, value, granularity=2)
    clusters = index.search(req)
    assert index.count(req) == sum(len(c.members) for c in clusters)
    assert index.export_rows(req).num_rows == index.count(req)


# --- semantic ---------------------------------------------------------------------------------


def brute_force_distances(index_dir: Path, encoder: Encoder, query: str) -> npt.NDArray[np.float64]:
    vectors = np.load(index_dir / EMBEDDINGS_FILE)
    similarity = (vectors @ encoder.encode_query(query)).astype(np.float64)
    distance: npt.NDArray[np.float64] = np.clip(1.0 - similarity, 0.0, 2.0)
    return distance


@pytest.mark.parametrize("op", ["semantic", "caption"])
@pytest.mark.parametrize("query", ["a cat sleeping by a window", "people eating pizza"])
def test_semantic_keeps_exactly_the_items_within_the_cutoff(
    index: SearchIndex,
    index_dir: Path,
    encoder: Encoder,
    rows: list[dict[str, Any]],
    op: TextOp,
    query: str,
) -> None:
    distance = brute_force_distances(index_dir, encoder, query)
    has_caption = np.array([r.get("caption") is not None for r in rows])
    previous: set[int] = set()
    for cutoff in (0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        got, scores, score_type = index.matching_rows(text(op, query, cutoff))
        expected = np.flatnonzero(has_caption & (distance <= cutoff))
        assert score_type == "cosine_distance"
        assert sorted(got.tolist()) == expected.tolist()
        np.testing.assert_allclose(scores, distance[got], atol=1e-6)
        keys = list(zip(scores.tolist(), got.tolist(), strict=True))
        assert keys == sorted(keys)  # distance ascending, ties by row
        assert previous <= set(got.tolist())  # a stricter cut-off gives a subset
        previous = set(got.tolist())
    default = matched(index, text(op, query))
    assert default == matched(index, text(op, query, DEFAULT_CUTOFF))


def test_the_exact_duplicate_captions_score_alike(index: SearchIndex) -> None:
    rows, scores, _ = index.matching_rows(text("semantic", "A cat sleeping near the window."))
    assert rows[:2].tolist() == [5, 6]
    assert scores[0] == scores[1] == pytest.approx(0.0, abs=1e-6)


def test_items_without_a_caption_never_match_text(index: SearchIndex, rows: list[Any]) -> None:
    last = len(rows) - 1
    ops: tuple[TextOp, ...] = ("semantic", "caption")
    for op in ops:
        assert last not in matched(index, text(op, "dog", 2.0))
    assert last in matched(index, SearchRequest(labels_one_of=("dog",)))


# --- filters ----------------------------------------------------------------------------------


def test_filters_are_anded(index: SearchIndex, rows: list[dict[str, Any]]) -> None:
    def has(row: dict[str, Any], key: str, wanted: set[str]) -> bool:
        return bool(set(row.get(key) or ()) & wanted)

    req = SearchRequest(labels_one_of=("dog", "cat"), tags_is=(RED, BLUE))
    expected = [
        i
        for i, r in enumerate(rows)
        if has(r, "labels", {"dog", "cat"}) and has(r, "tags", {RED, BLUE})
    ]
    assert expected and matched(index, req) == expected  # no text: row order
    fts = matched(index, text("fts", "dog", labels_one_of=("dog", "cat"), tags_is=(RED, BLUE)))
    assert set(fts) == set(expected) & set(matched(index, text("fts", "dog")))


@pytest.mark.parametrize(
    "req",
    [
        SearchRequest(labels_one_of=()),
        SearchRequest(labels_one_of=("no-such-label",)),
        SearchRequest(tags_is=("not-a-tag",)),
        SearchRequest(duplicates=math.nan),
        SearchRequest(uniqueness=math.inf),
        SearchRequest(entity_type="OBJECTS"),
    ],
    ids=["empty-labels", "unknown-label", "unknown-tag", "nan", "inf", "objects"],
)
def test_filters_that_nothing_passes(index: SearchIndex, req: SearchRequest) -> None:
    assert index.search(req) == [] and index.count(req) == 0


def test_duplicates_and_uniqueness_filters(index: SearchIndex, index_dir: Path) -> None:
    media = pq.read_table(index_dir / MEDIA_FILE)
    duplicate = media.column("duplicate").to_numpy()
    uniqueness = media.column("uniqueness").to_numpy()
    assert duplicate[5] == duplicate[6] == 1.0  # the identical captions
    for value in (0.05, 0.2, 0.5, 0.8, 0.95, 1.0):
        by_duplicate = matched(index, SearchRequest(duplicates=value))
        assert by_duplicate == np.flatnonzero(duplicate >= value).tolist()
        by_uniqueness = matched(index, SearchRequest(uniqueness=value))
        assert by_uniqueness == np.flatnonzero(uniqueness >= value).tolist()
    assert matched(index, SearchRequest(duplicates=0.5))  # the filters are not vacuous here
    assert matched(index, SearchRequest(uniqueness=0.2))
    assert set(matched(index, SearchRequest(duplicates=0.9, uniqueness=0.2))) == set()


def test_no_text_browses_everything_in_cluster_order(index: SearchIndex, levels: Any) -> None:
    for granularity in range(5):
        req = SearchRequest(granularity=granularity)
        clusters = index.search(req)
        indices = [int(levels[c.members[0].row, granularity]) for c in clusters]
        assert indices == sorted(indices) == list(range(index.n_clusters(granularity)))
        assert all(c.score == 0.0 and c.score_type == "none" for c in clusters)
        for cluster in clusters:
            member_rows = [m.row for m in cluster.members]
            assert member_rows == sorted(member_rows)
            assert cluster.n_images == len(member_rows)


# --- clusters and pages -----------------------------------------------------------------------


def cluster_index(cluster: ClusterMatch, levels: Any) -> int:
    return int(levels[cluster.members[0].row, cluster.granularity])


@pytest.mark.parametrize("granularity", range(5))
@pytest.mark.parametrize("op", ["fts", "semantic"])
def test_matches_group_into_clusters_best_first(
    index: SearchIndex, levels: Any, granularity: int, op: TextOp
) -> None:
    req = text(op, "a man riding a horse", 0.9, granularity=granularity)
    clusters = index.search(req)
    rows, scores, _ = index.matching_rows(req)
    score_of = dict(zip(rows.tolist(), scores.tolist(), strict=True))
    sign = -1.0 if op == "fts" else 1.0
    members = [m.row for c in clusters for m in c.members]
    assert sorted(members) == sorted(rows.tolist())  # every match once
    sizes = np.bincount(levels[:, granularity])
    keys = []
    for cluster in clusters:
        index_ = cluster_index(cluster, levels)
        assert {int(levels[m.row, granularity]) for m in cluster.members} == {index_}
        assert cluster.n_images == sizes[index_]
        assert cluster.cluster_id == index.cluster_id(granularity, index_)
        member_keys = [(sign * m.score, m.row) for m in cluster.members]
        assert member_keys == sorted(member_keys)
        assert all(m.score == score_of[m.row] for m in cluster.members)
        assert cluster.score == cluster.members[0].score
        keys.append((sign * cluster.score, cluster.cluster_id))
    assert keys == sorted(keys)  # best first, ties by cluster id


def test_cluster_ids_sort_like_indices(index: SearchIndex) -> None:
    for granularity in range(5):
        ids = [index.cluster_id(granularity, i) for i in range(index.n_clusters(granularity))]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all(str(uuid.UUID(i)) == i for i in ids)


def test_levels_are_nested_and_coarsen(levels: Any) -> None:
    for g in range(4):
        parent_of: dict[int, int] = {}
        for child, parent in zip(levels[:, g].tolist(), levels[:, g + 1].tolist(), strict=True):
            assert parent_of.setdefault(child, parent) == parent
    counts = [len(set(levels[:, g].tolist())) for g in range(5)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[4]


@pytest.mark.parametrize("page_size", [1, 7, 100])
def test_pages_are_slices_of_the_whole_answer(index: SearchIndex, page_size: int) -> None:
    req = text("fts", "a man and a woman", granularity=0)
    everything = index.search(req)
    assert len(everything) == index.count_clusters(req) > page_size
    pages: list[ClusterMatch] = []
    page = 0
    while chunk := index.search_page(req, page, page_size):
        assert len(chunk) == page_size or len(pages) + len(chunk) == len(everything)
        pages.extend(chunk)
        page += 1
    assert pages == everything
    assert index.search_page(req, -1) == []


def test_export_rows_are_the_matches_best_first(index: SearchIndex) -> None:
    req = text("semantic", "a dog", 0.7, labels_one_of=("dog",))
    table = index.export_rows(req)
    rows = index.matching_rows(req)[0].tolist()
    assert table.column_names == list(EXPORT_COLUMNS)
    assert table.column("media_id").to_pylist() == [index.member(r).media_id for r in rows]
    assert all(index.row_of(index.member(r).media_id) == r for r in rows)
    assert index.row_of("no such id") is None


def test_list_filters_work_like_tuples(index: SearchIndex) -> None:
    as_list = SearchRequest(labels_one_of=["dog"], tags_is=[RED, BLUE])  # type: ignore[arg-type]
    as_tuple = SearchRequest(labels_one_of=("dog",), tags_is=(RED, BLUE))
    assert index.search(as_list) == index.search(as_tuple) != []


def test_a_bad_granularity_is_a_value_error(index: SearchIndex) -> None:
    with pytest.raises(ValueError, match="granularity"):
        index.search(SearchRequest(granularity=5))


def test_opening_a_directory_that_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a dataset directory"):
        SearchIndex.open(tmp_path)


@pytest.mark.parametrize("missing", [FTS_FILE, MEDIA_FILE, EMBEDDINGS_FILE])
def test_opening_an_incomplete_dataset(tmp_path: Path, index_dir: Path, missing: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy)
    (copy / missing).unlink()
    with pytest.raises(DatasetError, match="incomplete dataset directory"):
        SearchIndex.open(copy)


# --- the clustering itself, on synthetic vectors ----------------------------------------------


def synthetic(n: int, dim: int = 24, seed: int = 7) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    x = centres[rng.integers(0, 12, n)] + rng.normal(scale=0.6, size=(n, dim))
    x[10:20] = x[0]  # ten exact duplicates of row 0
    x[30] = x[31] + rng.normal(scale=0.01, size=dim)  # a near duplicate
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def exact_best_other(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    sims = (x @ x.T).astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    best: npt.NDArray[np.float64] = np.clip(sims.max(axis=1), 0.0, 1.0)
    return best


def test_build_clusters_is_nested_deterministic_and_exact() -> None:
    x = synthetic(1500)
    first = build_clusters(x)
    again = build_clusters(x.copy())
    assert np.array_equal(first.levels, again.levels)
    for g in range(4):
        parent_of: dict[int, int] = {}
        for child, parent in first.levels[:, [g, g + 1]].tolist():
            assert parent_of.setdefault(child, parent) == parent
    assert all(
        len(set(first.levels[10:20, g].tolist()) | {first.levels[0, g]}) == 1 for g in range(5)
    )
    assert first.levels[30, 0] == first.levels[31, 0]  # near duplicates share a level-0 group
    assert first.exact_duplicates
    np.testing.assert_allclose(first.duplicate, exact_best_other(x), atol=1e-6)
    # Level 0 groups: every member is within the near-duplicate similarity of its group's leader.
    for group in set(first.levels[:, 0].tolist()):
        members = np.flatnonzero(first.levels[:, 0] == group)
        leader = members[0]
        assert np.all(x[members] @ x[leader] >= NEAR_DUPLICATE_SIMILARITY - 1e-6)


def test_duplicates_above_the_exact_limit_search_the_coarse_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = synthetic(1500)
    monkeypatch.setattr(clusters_module, "EXACT_DUPLICATE_LIMIT", 100)
    approx = build_clusters(x)
    assert not approx.exact_duplicates
    exact = exact_best_other(x)
    assert np.all(approx.duplicate <= exact + 1e-6)  # a subset of the neighbours
    coarse = approx.levels[:, 4]
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    same = coarse[:, None] == coarse[None, :]
    expected = np.clip(np.where(same, sims, -np.inf).max(axis=1), 0.0, 1.0)
    expected[~np.isfinite(expected)] = 0.0
    np.testing.assert_allclose(approx.duplicate, expected, atol=1e-6)
    assert approx.duplicate[0] == approx.duplicate[15] == 1.0


def test_one_item_and_no_items() -> None:
    one = build_clusters(synthetic(40)[:1])
    assert one.levels.tolist() == [[0, 0, 0, 0, 0]] and one.duplicate.tolist() == [0.0]
    none = build_clusters(np.zeros((0, 8), dtype=np.float32))
    assert none.levels.shape == (0, 5)


def test_a_search_is_quick_unless_it_must_embed_or_the_dataset_is_large(
    index: SearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Quick searches run on the server's event loop; the others in the index thread.
    unseen = f"a red kite over the sea {uuid.uuid4().hex}"
    assert index.is_quick(SearchRequest()) and index.is_quick(text("fts", unseen))
    for op in ("semantic", "caption"):
        assert not index.is_quick(text(op, unseen))  # its embedding is not computed yet
    index.search_page_json(text("semantic", unseen), 0)
    assert index.is_quick(text("caption", unseen))  # the same text: cached now
    monkeypatch.setattr(index_module, "QUICK_MAX_ITEMS", index.n_images - 1)
    assert not index.is_quick(text("fts", unseen))
