"""Every endpoint of the local Explore server over real HTTP, with the documented field types."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers_server import explore_url, fetch, vql, wait_for_export

from runner.errors import DatasetError
from runner.server.config import ServerConfig
from runner.server.index import PAGE_SIZE
from runner.server.lifecycle import ServerThread, serve_in_background

SEARCHES = [
    pytest.param({"caption": "a dog playing with a frisbee"}, "cosine_distance", id="caption"),
    pytest.param(
        {"image_caption": "a dog playing with a frisbee"}, "cosine_distance", id="image_caption"
    ),
    pytest.param({"vql": vql({"text": {"op": "fts", "value": "dog frisbee"}})}, "bm25", id="fts"),
    pytest.param(
        {"vql": vql({"text": {"op": "semantic", "value": "dog with frisbee", "threshold": 0.9}})},
        "cosine_distance",
        id="semantic",
    ),
]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_healthcheck_needs_no_token(
    session: aiohttp.ClientSession, demo_server: ServerThread
) -> None:
    reply = await fetch(session, f"{demo_server.base_url}/api/v1/healthcheck")
    assert reply.status == 200
    body = reply.json()
    assert body["status"] == "Green" and body["service-health-message"] == "none"
    assert isinstance(body["version"], str) and body["version"]


async def test_dataset(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    url = f"{demo_server.base_url}/api/v1/dataset/{demo_server.dataset_id}"
    body = (await fetch(session, url, headers=auth_headers)).json()
    assert body["id"] == demo_server.dataset_id
    assert isinstance(body["display_name"], str) and body["display_name"]
    assert body["status_new"] == "READY" and body["progress"] == 100
    assert body["n_images"] == demo_server.info.n_images > 0
    assert isinstance(body["n_images"], int)


async def test_enrichment_context(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    url = f"{demo_server.base_url}/api/v1/enrichment/{demo_server.dataset_id}/context"
    body = (await fetch(session, url, headers=auth_headers)).json()
    assert isinstance(body["enrichment_context_id"], str)
    assert body["status"] != "NEW"
    models = body["dataset_enrichment_models"]["enrichment_models"]
    assert set(models) == {"CAPTION_IMAGES", "MULTIMODEL_IMAGE_ENCODING", "IMAGE_TAGGING"}
    assert all(isinstance(model_id, str) and model_id for model_id in models.values())


@pytest.mark.parametrize("params, score_type", SEARCHES)
@pytest.mark.parametrize("threshold", [0, 4])
async def test_explore_shape_and_types(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    params: dict[str, str],
    score_type: str,
    threshold: int,
) -> None:
    query = {"entity_type": "IMAGES", "threshold": str(threshold), **params}
    reply = await fetch(
        session, explore_url(demo_server.base_url, demo_server.dataset_id), query, auth_headers
    )
    assert reply.status == 200, reply
    body = reply.json()
    assert set(body) == {"clusters", "metadata"}
    assert body["metadata"] == {"used_duckdb": True}
    clusters = body["clusters"]
    assert 0 < len(clusters) <= PAGE_SIZE
    for cluster in clusters:
        _check_cluster(cluster, score_type, threshold)
    _check_best_first([c["relevance_score"] for c in clusters], score_type)


def _check_cluster(cluster: dict[str, Any], score_type: str, threshold: int) -> None:
    assert set(cluster) == {
        "cluster_id",
        "type",
        "n_images",
        "n_objects",
        "n_videos",
        "similarity_threshold",
        "relevance_score",
        "relevance_score_type",
        "captions",
        "previews",
        "labels",
        "user_tags",
    }
    assert isinstance(cluster["cluster_id"], str) and cluster["type"] == "IMAGES"
    assert cluster["similarity_threshold"] == str(threshold)
    assert cluster["relevance_score_type"] == score_type
    assert isinstance(cluster["relevance_score"], float)
    assert isinstance(cluster["n_images"], int)
    assert cluster["n_objects"] == cluster["n_videos"] == 0
    assert cluster["n_images"] >= len(cluster["previews"]) >= 1
    assert all(isinstance(c, str) for c in cluster["captions"])  # every demo image has one
    for key in ("labels", "user_tags"):
        value = cluster[key]
        assert value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    for preview in cluster["previews"]:
        _check_preview(preview, score_type)
    # The cluster's score is its best preview's.
    assert cluster["relevance_score"] == cluster["previews"][0]["relevance_score"]
    _check_best_first([p["relevance_score"] for p in cluster["previews"]], score_type)


def _check_preview(preview: dict[str, Any], score_type: str) -> None:
    assert preview["type"] == "IMAGE"
    assert isinstance(preview["media_id"], str) and isinstance(preview["file_name"], str)
    assert isinstance(preview["caption"], str)
    assert preview["relevance_score_type"] == score_type
    assert isinstance(preview["relevance_score"], float)
    for key in ("width", "height"):
        assert preview[key] is None or isinstance(preview[key], int)
    for key in ("media_uri", "media_thumb_uri"):
        assert preview[key] is None or isinstance(preview[key], str)
    assert preview["labels"] is None or isinstance(preview["labels"], list)
    assert preview["bounding_box"] is None  # images, not objects


def _check_best_first(scores: list[float], score_type: str) -> None:
    # cosine_distance: lower is better; bm25 (as -bm25()): higher is better.
    ordered = sorted(scores, reverse=score_type == "bm25")
    assert scores == ordered


async def test_explore_without_text_lists_every_cluster(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    url = explore_url(demo_server.base_url, demo_server.dataset_id)
    reply = await fetch(session, url, {"entity_type": "IMAGES", "threshold": "4"}, auth_headers)
    clusters = reply.json()["clusters"]
    assert clusters and all(c["previews"] for c in clusters)


async def test_export_round_trip(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    base = f"{demo_server.base_url}/api/v1/dataset/{demo_server.dataset_id}"
    params = {
        "file_name": "dogs",
        "export_format": "parquet",
        "entity_type": "IMAGES",
        "vql": vql({"text": {"op": "fts", "value": "dog"}}),
    }
    started = await fetch(session, f"{base}/export_context_async", params, auth_headers)
    assert started.status == 200, started
    job = started.json()
    assert job["status"] == "INIT" and isinstance(job["id"], str)
    assert isinstance(job["entities_count"], int) and job["entities_count"] > 0
    status = await wait_for_export(session, base, job["id"], auth_headers)
    assert status["status"] == "COMPLETED" and status["progress"] == 100.0
    assert isinstance(status["progress"], float)
    assert isinstance(status["download_uri"], str) and status["download_uri"].startswith("/")
    assert status["result_message"] is None
    download = await fetch(session, demo_server.base_url + status["download_uri"])
    assert download.status == 200
    assert download.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.raw)) as archive:
        assert archive.namelist() == ["metadata.parquet"]


async def test_serve_in_background_in_the_test_loop(
    session: aiohttp.ClientSession, demo_dataset_dir: Path
) -> None:
    config = ServerConfig(dataset_dir=demo_dataset_dir, auth=False)
    async with serve_in_background(config) as server:
        url = explore_url(server.base_url, server.dataset_id)
        reply = await fetch(session, url, {"entity_type": "IMAGES", "labels": '["zebra"]'})
        assert reply.status == 200 and reply.json()["clusters"]
    with pytest.raises(aiohttp.ClientConnectionError):
        await fetch(session, f"{server.base_url}/api/v1/healthcheck")


def test_server_thread_reports_a_bad_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError), ServerThread(ServerConfig(dataset_dir=tmp_path)):
        pass
