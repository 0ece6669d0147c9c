"""Search semantics of the local server over real HTTP on the demo dataset.

Expected sets come from the dataset's own media table (read with pyarrow, not through the index):
stemming, paging, nested cut-offs, granularity, label / tag / uniqueness filters.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.parquet as pq
import pytest
from helpers_server import all_pages, explore_url, fetch, vql

from runner.server.dataset import MEDIA_FILE
from runner.server.demo import DEMO_TAGS
from runner.server.index import PAGE_SIZE
from runner.server.lifecycle import ServerThread

Pages = list[list[dict[str, Any]]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(scope="module")
def media(demo_dataset_dir: Path) -> list[dict[str, Any]]:
    """The demo's media rows as stored on disk."""
    columns = ["media_id", "caption", "labels", "tags", "uniqueness"]
    rows: list[dict[str, Any]] = pq.read_table(
        demo_dataset_dir / MEDIA_FILE, columns=columns
    ).to_pylist()
    return rows


async def _pages(
    session: aiohttp.ClientSession, server: ServerThread, headers: dict[str, str], **params: str
) -> Pages:
    query = {"entity_type": "IMAGES", **params}
    return await all_pages(session, explore_url(server.base_url, server.dataset_id), query, headers)


def _media_ids(pages: Pages) -> list[str]:
    return [p["media_id"] for page in pages for cluster in page for p in cluster["previews"]]


def _previews(pages: Pages) -> list[dict[str, Any]]:
    return [p for page in pages for cluster in page for p in cluster["previews"]]


async def test_plural_query_finds_the_singular(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    media: list[dict[str, Any]],
) -> None:
    singular_only = {
        row["media_id"]
        for row in media
        if row["caption"]
        and re.search(r"\bdog\b", row["caption"].lower())
        and "dogs" not in row["caption"].lower()
    }
    assert singular_only, "the demo has captions saying 'dog'"
    pages = await _pages(
        session, demo_server, auth_headers, vql=vql({"text": {"op": "fts", "value": "dogs"}})
    )
    found = set(_media_ids(pages))
    assert singular_only <= found
    assert all(p["relevance_score_type"] == "bm25" for p in _previews(pages))


async def test_fts_is_an_or_of_the_terms(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    async def hits(text: str) -> set[str]:
        pages = await _pages(
            session, demo_server, auth_headers, vql=vql({"text": {"op": "fts", "value": text}})
        )
        return set(_media_ids(pages))

    giraffe, surfboard = await hits("giraffe"), await hits("surfboard")
    both = await hits("giraffe surfboard")
    assert giraffe and surfboard
    assert both == giraffe | surfboard


async def test_pages_are_full_disjoint_and_cover_the_dataset(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    pages = await _pages(session, demo_server, auth_headers, threshold="0")
    assert len(pages) >= 2
    assert all(len(page) == PAGE_SIZE for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= PAGE_SIZE
    cluster_ids = [c["cluster_id"] for page in pages for c in page]
    assert len(cluster_ids) == len(set(cluster_ids))
    media_ids = _media_ids(pages)
    # Without text every item matches once: the previews are the whole dataset.
    assert len(media_ids) == len(set(media_ids)) == demo_server.info.n_images
    assert sum(c["n_images"] for page in pages for c in page) == demo_server.info.n_images


@pytest.mark.parametrize("past", [0, 1, 1000])
async def test_page_past_the_end_is_empty(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    past: int,
) -> None:
    params = {"entity_type": "IMAGES", "vql": vql({"text": {"op": "fts", "value": "giraffe"}})}
    url = explore_url(demo_server.base_url, demo_server.dataset_id)
    pages = await all_pages(session, url, params, auth_headers)
    reply = await fetch(
        session, url, {**params, "page_number": str(len(pages) + past)}, auth_headers
    )
    assert reply.status == 200
    assert reply.json() == {"clusters": [], "metadata": {"used_duckdb": True}}


async def test_same_request_same_answer(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    params = {"caption": "a man riding a horse", "threshold": "2"}
    first = await _pages(session, demo_server, auth_headers, **params)
    second = await _pages(session, demo_server, auth_headers, **params)
    assert first == second


CUTOFFS = (0.5, 0.6, 0.7, 0.8, 0.9)


@pytest.mark.parametrize("via", ["caption", "semantic"])
async def test_stricter_cutoff_is_a_subset(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    via: str,
) -> None:
    text = "a man riding a horse on a beach"
    found: list[set[str]] = []
    for cutoff in CUTOFFS:
        if via == "caption":
            params = {"caption": text, "textual_similarity_threshold": str(cutoff)}
        else:
            params = {"vql": vql({"text": {"op": "semantic", "value": text, "threshold": cutoff}})}
        pages = await _pages(session, demo_server, auth_headers, **params)
        scores = [p["relevance_score"] for p in _previews(pages)]
        assert all(score <= cutoff for score in scores), (cutoff, max(scores))
        found.append(set(_media_ids(pages)))
    assert found[0], "the strictest cut-off still finds horse riders"
    for stricter, looser in zip(found, found[1:], strict=False):
        assert stricter <= looser
    assert found[0] < found[-1]


async def test_default_cutoff_is_0_8(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    text = "a bowl of fruit on a table"
    default = await _pages(session, demo_server, auth_headers, caption=text)
    explicit = await _pages(
        session, demo_server, auth_headers, caption=text, textual_similarity_threshold="0.8"
    )
    assert _media_ids(default) == _media_ids(explicit)


async def test_granularity_groups_the_same_matches_coarser(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    text = vql({"text": {"op": "fts", "value": "train"}})
    levels = [
        await _pages(session, demo_server, auth_headers, vql=text, threshold=str(g))
        for g in range(5)
    ]
    matches = [set(_media_ids(pages)) for pages in levels]
    assert all(m == matches[0] for m in matches)
    counts = [sum(len(page) for page in pages) for pages in levels]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    # Nested: the previews of one fine cluster all land in one coarser cluster.
    for fine, coarse in zip(levels, levels[1:], strict=False):
        home = {
            p["media_id"]: c["cluster_id"] for page in coarse for c in page for p in c["previews"]
        }
        for page in fine:
            for cluster in page:
                assert len({home[p["media_id"]] for p in cluster["previews"]}) == 1
    assert {c["similarity_threshold"] for c in levels[3][0]} == {"3"}


async def test_granularity_changes_cluster_counts_without_text(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    counts = []
    for g in (0, 4):
        pages = await _pages(session, demo_server, auth_headers, threshold=str(g))
        counts.append(sum(len(page) for page in pages))
    assert counts[0] > counts[1] >= 1


@pytest.mark.parametrize(
    "labels", [pytest.param(["dog"], id="one"), pytest.param(["giraffe", "zebra"], id="two")]
)
@pytest.mark.parametrize("via", ["param", "vql"])
async def test_label_filter_matches_the_labelled_items(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    media: list[dict[str, Any]],
    labels: list[str],
    via: str,
) -> None:
    expected = {r["media_id"] for r in media if set(r["labels"] or ()) & set(labels)}
    if via == "param":
        params = {"labels": json.dumps(labels)}
    else:
        params = {"vql": vql({"labels": {"op": "one_of", "value": labels}})}
    pages = await _pages(session, demo_server, auth_headers, **params)
    assert expected and set(_media_ids(pages)) == expected
    for page in pages:
        for cluster in page:
            assert set(cluster["labels"]) & set(labels)


async def test_label_filter_and_text_are_anded(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    media: list[dict[str, Any]],
) -> None:
    text = {"text": {"op": "fts", "value": "frisbee"}}
    label = {"labels": {"op": "one_of", "value": ["dog"]}}
    both = set(_media_ids(await _pages(session, demo_server, auth_headers, vql=vql(text, label))))
    text_only = set(_media_ids(await _pages(session, demo_server, auth_headers, vql=vql(text))))
    dogs = {r["media_id"] for r in media if "dog" in (r["labels"] or ())}
    assert both and both == text_only & dogs


@pytest.mark.parametrize("tag", sorted(DEMO_TAGS))
@pytest.mark.parametrize("via", ["param", "vql"])
async def test_tag_filter_matches_the_tagged_items(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    media: list[dict[str, Any]],
    tag: str,
    via: str,
) -> None:
    tag_id = DEMO_TAGS[tag]
    expected = {r["media_id"] for r in media if tag_id in (r["tags"] or ())}
    if via == "param":
        params = {"tags": json.dumps([tag_id])}
    else:
        params = {"vql": vql({"tags": {"op": "is", "value": [tag_id.upper()]}})}
    pages = await _pages(session, demo_server, auth_headers, **params)
    assert expected and set(_media_ids(pages)) == expected
    assert all(tag_id in c["user_tags"] for page in pages for c in page)


async def test_uniqueness_filter_is_nested(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    media: list[dict[str, Any]],
) -> None:
    found = []
    for value in (0.6, 0.4, 0.2):
        params = {"vql": vql({"uniqueness": {"op": "uniqueness", "value": value}})}
        got = set(_media_ids(await _pages(session, demo_server, auth_headers, **params)))
        assert got == {r["media_id"] for r in media if r["uniqueness"] >= value}
        found.append(got)
    assert found[0] <= found[1] <= found[2]
