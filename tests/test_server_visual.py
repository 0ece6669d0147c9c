"""Visual search (`anchor_media_id`) over real HTTP on the demo: ranked by the anchor's image
embedding (checked against a brute-force search over the embeddings on disk), with the same
cut-off, clusters and pages as the other searches; bad anchors are refused by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import pytest
from helpers_server import StartServer, all_pages, explore_url, fetch, wait_for_export

from runner.server.dataset import IMAGE_EMBEDDINGS_FILE, MEDIA_FILE
from runner.server.lifecycle import ServerThread
from runner.server.query import DEFAULT_CUTOFF

TIE = 1e-5


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(scope="module")
def media_ids(demo_dataset_dir: Path) -> list[str]:
    ids: list[str] = pq.read_table(demo_dataset_dir / MEDIA_FILE).column("media_id").to_pylist()
    return ids


@pytest.fixture(scope="module")
def image_vectors(demo_dataset_dir: Path) -> npt.NDArray[np.float32]:
    vectors: npt.NDArray[np.float32] = np.load(demo_dataset_dir / IMAGE_EMBEDDINGS_FILE)
    return vectors


def _brute_force(vectors: npt.NDArray[np.float32], anchor: int, cutoff: float) -> dict[int, float]:
    distance = np.clip(1.0 - (vectors @ vectors[anchor]).astype(np.float64), 0.0, 2.0)
    return {int(i): float(distance[i]) for i in np.flatnonzero(distance <= cutoff)}


async def _visual(
    session: aiohttp.ClientSession,
    server: ServerThread,
    headers: dict[str, str],
    anchor: str,
    **params: str,
) -> list[list[dict[str, Any]]]:
    query = {"entity_type": "IMAGES", "anchor_media_id": anchor, "anchor_type": "MEDIA", **params}
    url = explore_url(server.base_url, server.dataset_id)
    return await all_pages(session, url, query, headers)


def _previews(pages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [p for page in pages for c in page for p in c["previews"]]


@pytest.mark.parametrize("row", [0, 1234, 2500])
async def test_visual_search_ranks_by_the_anchors_image_embedding(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    media_ids: list[str],
    image_vectors: npt.NDArray[np.float32],
    row: int,
) -> None:
    pages = await _visual(session, demo_server, auth_headers, media_ids[row])
    want = _brute_force(image_vectors, row, DEFAULT_CUTOFF)
    previews = _previews(pages)
    got = {media_ids.index(p["media_id"]): p["relevance_score"] for p in previews}
    assert len(got) == len(previews) == len(want) > 1
    assert set(got) == set(want)
    np.testing.assert_allclose([got[r] for r in want], list(want.values()), atol=TIE)
    assert all(p["relevance_score_type"] == "cosine_distance" for p in previews)
    # The anchor itself is the best match; clusters come best first.
    assert pages[0][0]["previews"][0]["media_id"] == media_ids[row]
    assert pages[0][0]["relevance_score"] == pytest.approx(0.0, abs=TIE)
    cluster_scores = [c["relevance_score"] for page in pages for c in page]
    assert cluster_scores == sorted(cluster_scores)


async def test_a_stricter_cutoff_gives_a_subset_and_granularity_keeps_the_set(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    media_ids: list[str],
) -> None:
    anchor = media_ids[42]

    async def found(**params: str) -> set[str]:
        pages = await _visual(session, demo_server, auth_headers, anchor, **params)
        return {p["media_id"] for p in _previews(pages)}

    strict = await found(textual_similarity_threshold="0.3")
    loose = await found(textual_similarity_threshold="0.5")
    assert strict and strict < loose
    assert await found(threshold="4", textual_similarity_threshold="0.5") == loose


async def test_visual_export_holds_the_search_matches(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    media_ids: list[str],
) -> None:
    anchor = media_ids[7]
    searched = {
        p["media_id"] for p in _previews(await _visual(session, demo_server, auth_headers, anchor))
    }
    base = f"{demo_server.base_url}/api/v1/dataset/{demo_server.dataset_id}"
    params = {"file_name": "like-7", "export_format": "json", "anchor_media_id": anchor}
    started = (await fetch(session, f"{base}/export_context_async", params, auth_headers)).json()
    assert started["entities_count"] == len(searched)
    status = await wait_for_export(session, base, started["id"], auth_headers)
    assert status["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "params, status, named",
    [
        pytest.param({"anchor_media_id": "no-such-media"}, 404, "no-such-media", id="unknown"),
        pytest.param({"anchor_media_id": "x", "anchor_type": "UPLOAD"}, 404, "UPLOAD", id="upload"),
        pytest.param(
            {"anchor_media_id": "x", "anchor_type": "OBJECT"}, 409, "OBJECT_DETECTION", id="object"
        ),
        pytest.param(
            {"anchor_media_id": "x", "anchor_type": "IMAGE"}, 422, "anchor_type", id="type"
        ),
        pytest.param({"anchor_type": "MEDIA"}, 422, "anchor_type", id="type-alone"),
        pytest.param({"anchor_media_id": ""}, 422, "anchor_media_id", id="empty"),
        pytest.param(
            {"anchor_media_id": "x", "caption": "a dog"}, 422, "anchor_media_id", id="two-rankings"
        ),
    ],
)
async def test_bad_anchors_are_refused_by_name(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    params: dict[str, str],
    status: int,
    named: str,
) -> None:
    url = explore_url(demo_server.base_url, demo_server.dataset_id)
    reply = await fetch(session, url, {"entity_type": "IMAGES", **params}, auth_headers)
    assert reply.status == status, reply
    assert named in str(reply.detail)


async def test_visual_search_can_be_disabled(
    session: aiohttp.ClientSession,
    start_server: StartServer,
    auth_headers: dict[str, str],
    media_ids: list[str],
) -> None:
    server = start_server(disabled_features=frozenset({"visual_search"}))
    url = explore_url(server.base_url, server.dataset_id)
    query = {"entity_type": "IMAGES", "anchor_media_id": media_ids[0]}
    reply = await fetch(session, url, query, auth_headers)
    assert reply.status == 403 and "visual_search" in reply.detail


async def test_visual_search_needs_image_embeddings_not_captions(
    start_server: StartServer,
    session: aiohttp.ClientSession,
    auth_headers: dict[str, str],
    media_ids: list[str],
) -> None:
    server = start_server(hidden_enrichments=frozenset({"MULTIMODEL_IMAGE_ENCODING"}))
    url = explore_url(server.base_url, server.dataset_id)
    query = {"entity_type": "IMAGES", "anchor_media_id": media_ids[0], "anchor_type": "MEDIA"}
    refused = await fetch(session, url, query, auth_headers)
    assert refused.status == 409
    assert "MULTIMODEL_IMAGE_ENCODING" in str(refused.detail)
    semantic = await fetch(
        session,
        url,
        {"entity_type": "IMAGES", "vql": '[{"text": {"op": "semantic", "value": "a dog"}}]'},
        auth_headers,
    )
    assert semantic.status == 200  # captions still make semantic search
