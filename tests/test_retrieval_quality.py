"""Retrieval over a real-caption dataset that is not the demo equals exact reference searches.

The dataset: 300 COCO val2017 images, each indexed by its THIRD caption (the demo indexes the
first); each image's FOURTH caption is a known-item query whose answer is that image. Semantic
search must equal an exact brute-force MiniLM search done here with numpy over the same captions,
full-text search must equal a plain SQLite FTS5 bm25 query built here, both at the index and over
HTTP from the served dataset; the MRR of both shows the quality is sane.
"""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from helpers_server import StartServer

from runner.server.dataset import derive_media_id, import_dataset
from runner.server.demo import DemoImage, demo_images
from runner.server.encoder import Encoder, load_encoder
from runner.server.index import SearchIndex
from runner.server.query import SearchRequest, TextQuery

N_IMAGES = 300
FIRST_IMAGE = 1200  # images [1200, 1500) of the shipped file
N_QUERIES = 100  # known-item queries for the first 100 images; all 300 are candidates
TOP_K = 10
TIE = 1e-5  # scores closer than this may swap places between two float orders


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_encoder()


@pytest.fixture(scope="module")
def images() -> list[DemoImage]:
    picked = demo_images()[FIRST_IMAGE : FIRST_IMAGE + N_IMAGES]
    assert all(len(im.captions) >= 4 for im in picked)
    return picked


@pytest.fixture(scope="module")
def captions(images: list[DemoImage]) -> list[str]:
    return [im.captions[2] for im in images]


@pytest.fixture(scope="module")
def queries(images: list[DemoImage]) -> list[tuple[str, int]]:
    """(query text, row of its known item)."""
    return [(im.captions[3], row) for row, im in enumerate(images[:N_QUERIES])]


@pytest.fixture(scope="module")
def quality_dir(tmp_path_factory: pytest.TempPathFactory, images: list[DemoImage]) -> Path:
    base = tmp_path_factory.mktemp("quality")
    src = base / "coco-third-captions.jsonl"
    rows = [
        {
            "file_name": im.file_name,
            "caption": im.captions[2],
            "width": im.width,
            "height": im.height,
        }
        for im in images
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import_dataset(src, "coco-quality", base / "ds", encoder=load_encoder(), chunk_rows=128)
    return base / "ds"


@pytest.fixture(scope="module")
def index(quality_dir: Path, encoder: Encoder) -> Iterator[SearchIndex]:
    with SearchIndex.open(quality_dir, encoder=encoder) as opened:
        yield opened


# --- the references, built here without the index's code ---------------------------------------


@pytest.fixture(scope="module")
def reference_vectors(encoder: Encoder, captions: list[str]) -> npt.NDArray[np.float32]:
    return encoder.encode(captions)


@pytest.fixture(scope="module")
def query_vectors(encoder: Encoder, queries: list[tuple[str, int]]) -> npt.NDArray[np.float32]:
    return encoder.encode([q for q, _ in queries])


def brute_force(
    vectors: npt.NDArray[np.float32], query: npt.NDArray[np.float32]
) -> list[tuple[int, float]]:
    """Every item as (row, cosine distance), nearest first, ties by row."""
    distance = np.clip(1.0 - (vectors @ query).astype(np.float64), 0.0, 2.0)
    order = np.lexsort((np.arange(distance.size), distance))
    return [(int(i), float(distance[i])) for i in order]


@pytest.fixture(scope="module")
def plain_fts(captions: list[str]) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize = 'porter unicode61')")
    db.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", enumerate(captions))
    yield db
    db.close()


def plain_bm25(db: sqlite3.Connection, query: str) -> list[tuple[int, float]]:
    """Every caption holding any word of the query as (row, -bm25), best first, ties by row."""
    words = dict.fromkeys(re.findall(r"[^\W_]+", query.lower()))
    expression = " OR ".join(f'"{w}"' for w in words)
    found = db.execute(
        "SELECT rowid, -bm25(t) AS s FROM t WHERE t MATCH ? ORDER BY s DESC, rowid", (expression,)
    ).fetchall()
    return [(int(r), float(s)) for r, s in found]


def assert_same_ranking(
    got: list[tuple[int, float]], want: list[tuple[int, float]], k: int
) -> None:
    """Same top-k rows and scores; rows whose scores tie within TIE may come in either order."""
    assert len(got) >= min(k, len(want))
    np.testing.assert_allclose([s for _, s in got[:k]], [s for _, s in want[:k]], atol=TIE)
    for i in range(min(k, len(want))):
        if got[i][0] != want[i][0]:
            tied = {r for r, s in want if abs(s - want[i][1]) < TIE}
            assert got[i][0] in tied, f"rank {i + 1}: {got[i]} is not {want[i]}"


def reciprocal_rank(ranking: list[int], answer: int) -> float:
    return 1.0 / (ranking.index(answer) + 1) if answer in ranking else 0.0


# --- the checks --------------------------------------------------------------------------------


def test_semantic_search_equals_an_exact_brute_force_minilm_search(
    index: SearchIndex,
    reference_vectors: npt.NDArray[np.float32],
    query_vectors: npt.NDArray[np.float32],
    queries: list[tuple[str, int]],
) -> None:
    rr = []
    for (query, answer), vector in zip(queries, query_vectors, strict=True):
        want = brute_force(reference_vectors, vector)
        rows, scores, _ = index.matching_rows(SearchRequest(text=TextQuery("semantic", query, 2.0)))
        got = list(zip(rows.tolist(), scores.tolist(), strict=True))
        assert len(got) == len(want)  # cut-off 2.0 keeps every caption
        assert_same_ranking(got, want, TOP_K)
        rr.append(reciprocal_rank(rows.tolist(), answer))
    mrr = float(np.mean(rr))
    print(f"\nsemantic known-item MRR over {len(rr)} queries, {N_IMAGES} images: {mrr:.3f}")
    assert mrr > 0.5  # MiniLM finds another caption of the same image near the top


def test_fts_equals_a_plain_fts5_bm25_query(
    index: SearchIndex, plain_fts: sqlite3.Connection, queries: list[tuple[str, int]]
) -> None:
    rr = []
    for query, answer in queries:
        want = plain_bm25(plain_fts, query)
        rows, scores, _ = index.matching_rows(SearchRequest(text=TextQuery("fts", query)))
        got = list(zip(rows.tolist(), scores.tolist(), strict=True))
        assert [r for r, _ in got] == [r for r, _ in want]  # same set, same order, all of it
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-9)
        rr.append(reciprocal_rank(rows.tolist(), answer))
    mrr = float(np.mean(rr))
    print(f"\nfts known-item MRR over {len(rr)} queries, {N_IMAGES} images: {mrr:.3f}")
    assert mrr > 0.3


def fetch(base_url: str, dataset_id: str, params: dict[str, str]) -> dict[str, Any]:
    url = f"{base_url}/api/v1/explore/{dataset_id}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


@pytest.mark.parametrize("op", ["semantic", "fts"])
def test_the_served_dataset_answers_the_same(
    start_server: StartServer,
    quality_dir: Path,
    images: list[DemoImage],
    reference_vectors: npt.NDArray[np.float32],
    query_vectors: npt.NDArray[np.float32],
    plain_fts: sqlite3.Connection,
    queries: list[tuple[str, int]],
    op: str,
) -> None:
    server = start_server(dataset_dir=quality_dir, auth=False)
    media_ids = [derive_media_id(im.file_name) for im in images]
    for (query, _), vector in list(zip(queries, query_vectors, strict=True))[:20]:
        if op == "semantic":
            want = [(r, d) for r, d in brute_force(reference_vectors, vector) if d <= 0.8]
        else:
            want = plain_bm25(plain_fts, query)
        vql = json.dumps([{"text": {"op": op, "value": query}}])
        params = {"entity_type": "IMAGES", "threshold": "0", "vql": vql}
        got: list[tuple[int, float]] = []
        for page in range(N_IMAGES):  # at most one cluster per image
            clusters = fetch(
                server.base_url, server.dataset_id, {**params, "page_number": str(page)}
            )
            if not clusters["clusters"]:
                break
            for cluster in clusters["clusters"]:
                for preview in cluster["previews"]:
                    got.append((media_ids.index(preview["media_id"]), preview["relevance_score"]))
        assert sorted(r for r, _ in got) == sorted(r for r, _ in want)
        by_row = dict(want)
        np.testing.assert_allclose([s for _, s in got], [by_row[r] for r, _ in got], atol=TIE)
