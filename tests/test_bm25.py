"""BM25 in numpy gives what SQLite FTS5's bm25() gives: the same rows, ranking and scores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from helpers_server import import_small_dataset

from runner.server.dataset import FTS_FILE, FTS_TABLE, FTS_TOKENIZER
from runner.server.demo import demo_images
from runner.server.fts import FtsIndex, QueryTokenizer

# A character Python counts as a letter but SQLite's unicode61 does not (older Unicode tables):
# a query word holding it is a phrase of two tokens for FTS5, answered by SQLite itself.
SPLIT_BY_FTS5 = "\u19b0"

SMALL_CAPTIONS = [
    "A dog sits on the porch.",
    "Dogs dogs DOGS: three dogs running with a dog.",
    "",  # an empty caption is a row of no tokens: it counts in N and in the mean length
    "A café with crème brûlée, naïve art on the façade.",
    "Runners run a marathon near the river; running is fun.",
    "the the the the the the the the",
    "A zebra grazing in a field next to a zebra crossing.",
    f"An odd x{SPLIT_BY_FTS5}y word in a caption.",
    "東京の夜景 and a dog",
]
EDGE_QUERIES = [
    "dog",
    "dogs dog DOG doggy",
    "the",
    "a the of",
    "café creme NAIVE",
    "running runners run ran",
    "zebra zebra crossing",
    "absentword",
    "absentword dog",
    "東京の夜景",
    f"dog x{SPLIT_BY_FTS5}y",
    'NEAR("dog" cat) OR pizza* -bus ^train col:x',
    " ".join(f"w{i}" for i in range(100)) + " dog",
]


def _ranked(
    rows: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]
) -> tuple[list[int], list[float]]:
    """Rows best first, ties by row (the index's order), and their scores."""
    order = np.lexsort((rows, -scores))
    return rows[order].tolist(), scores[order].tolist()


def _assert_same(fts: FtsIndex, query: str) -> None:
    got_rows, got_scores = _ranked(*fts.search(query))
    want_rows, want_scores = _ranked(*fts.search_sqlite(query))
    assert got_rows == want_rows, query
    assert got_scores == pytest.approx(want_scores, rel=1e-12, abs=0.0), query


@pytest.fixture(scope="module")
def small_fts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtsIndex]:
    base = tmp_path_factory.mktemp("bm25")
    rows = [{"file_name": f"{i}.jpg", "caption": c} for i, c in enumerate(SMALL_CAPTIONS)]
    rows.append({"file_name": "no-caption.jpg"})
    import_small_dataset(base, "small", rows)
    fts = FtsIndex(base / "small" / FTS_FILE, FTS_TABLE, n_docs=len(rows), tokenizer=FTS_TOKENIZER)
    yield fts
    fts.close()


@pytest.fixture(scope="module")
def demo_fts(demo_dataset_dir: Path) -> Iterator[FtsIndex]:
    n_docs = len(demo_images())
    fts = FtsIndex(demo_dataset_dir / FTS_FILE, FTS_TABLE, n_docs=n_docs, tokenizer=FTS_TOKENIZER)
    yield fts
    fts.close()


@pytest.mark.parametrize("query", EDGE_QUERIES)
def test_small_dataset_edge_cases(small_fts: FtsIndex, query: str) -> None:
    _assert_same(small_fts, query)


def test_edge_queries_find_something(small_fts: FtsIndex) -> None:
    # The comparisons above must not pass by both sides finding nothing.
    assert small_fts.search("dogs dog DOG doggy")[0].tolist() == [0, 1, 8]
    assert small_fts.search("absentword")[0].size == 0


def test_a_word_fts5_splits_is_answered_by_sqlite(small_fts: FtsIndex) -> None:
    tokens = QueryTokenizer(FTS_TOKENIZER).tokens([f"x{SPLIT_BY_FTS5}y", "dogs"])
    assert tokens == [("x", "y"), ("dog",)]
    rows, _ = small_fts.search(f"x{SPLIT_BY_FTS5}y")
    assert rows.tolist() == [7]  # the phrase "x y", as FTS5 reads it


def test_demo_queries_rank_and_score_as_fts5(demo_fts: FtsIndex) -> None:
    # Real query text: the demo images' other human captions (stop words, plurals, punctuation).
    queries = [c for image in demo_images()[::25] for c in image.captions[1:3]]
    assert len(queries) > 150
    for query in [*queries, *EDGE_QUERIES]:
        _assert_same(demo_fts, query)


def test_repeated_tokens_count_twice(small_fts: FtsIndex) -> None:
    # "dogs" and "dog" are two phrases of one token: FTS5 adds the term's share twice.
    one_rows, one = small_fts.search("dog")
    two_rows, two = small_fts.search("dog dogs")
    assert one_rows.tolist() == two_rows.tolist()
    assert two == pytest.approx(2 * one, rel=1e-15)


def test_a_small_token_cache_keeps_every_term_of_a_query() -> None:
    tokenizer = QueryTokenizer(FTS_TOKENIZER, cache_size=3)
    tokenizer.prime(["dogs", "cats", "running"])
    # "dogs" is cached and oldest; the three new terms would evict it while it is still needed.
    assert tokenizer.tokens(["dogs", "runners", "zebras", "walked"]) == [
        ("dog",),
        ("runner",),
        ("zebra",),
        ("walk",),
    ]
    assert tokenizer.tokens(["cats"]) == [("cat",)]  # evicted, tokenized again
