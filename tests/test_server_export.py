"""Export jobs over real HTTP: the ZIP holds exactly what paging through search finds."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pyarrow.parquet as pq
import pytest
from helpers_server import StartServer, all_pages, explore_url, fetch, vql, wait_for_export

from runner.server.demo import DEMO_TAGS
from runner.server.lifecycle import ServerThread

FILTERS = [
    pytest.param({"vql": vql({"text": {"op": "fts", "value": "dogs"}})}, id="fts"),
    pytest.param(
        {"caption": "a red double decker bus", "textual_similarity_threshold": "0.6"}, id="caption"
    ),
    pytest.param(
        {"vql": vql({"text": {"op": "semantic", "value": "kites in the sky", "threshold": 0.65}})},
        id="semantic",
    ),
    pytest.param({"labels": '["cat"]'}, id="labels"),
    pytest.param({"tags": json.dumps([DEMO_TAGS["favourite"]])}, id="tags"),
    pytest.param(
        {
            "vql": vql(
                {"text": {"op": "fts", "value": "frisbee"}},
                {"labels": {"op": "one_of", "value": ["dog"]}},
            )
        },
        id="fts-and-labels",
    ),
]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _base(server: ServerThread) -> str:
    return f"{server.base_url}/api/v1/dataset/{server.dataset_id}"


async def _export(
    session: aiohttp.ClientSession, server: ServerThread, headers: dict[str, str], **params: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start an export and wait for it: (the start answer, the final status)."""
    params = {"file_name": "matches", "export_format": "parquet", **params}
    started = await fetch(session, f"{_base(server)}/export_context_async", params, headers)
    assert started.status == 200, started
    job: dict[str, Any] = started.json()
    return job, await wait_for_export(session, _base(server), job["id"], headers)


def _members(archive_bytes: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.parametrize("params", FILTERS)
@pytest.mark.parametrize("export_format", ["parquet", "json"])
async def test_zip_holds_exactly_the_search_matches(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    params: dict[str, str],
    export_format: str,
) -> None:
    query = {"entity_type": "IMAGES", **params}
    url = explore_url(demo_server.base_url, demo_server.dataset_id)
    pages = await all_pages(session, url, query, auth_headers)
    searched = [p["media_id"] for page in pages for c in page for p in c["previews"]]

    job, status = await _export(
        session, demo_server, auth_headers, export_format=export_format, **query
    )
    assert status["status"] == "COMPLETED", status
    assert isinstance(status["progress"], float) and status["result_message"] is None
    download = await fetch(session, demo_server.base_url + status["download_uri"])
    assert download.status == 200
    members = _members(download.raw)
    assert list(members) == [f"metadata.{export_format}"]
    data = members[f"metadata.{export_format}"]
    if export_format == "parquet":
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    else:
        document = json.loads(data)
        assert set(document) == {"info", "media_items"}
        assert document["info"]["entities_count"] == job["entities_count"]
        rows = document["media_items"]
        for row in rows:
            assert {"media_id", "file_name", "file_path", "cluster_id", "uniqueness_score"} <= set(
                row
            )
            assert isinstance(row["metadata_items"], list)
    exported = [row["media_id"] for row in rows]
    assert searched and len(exported) == len(set(exported)) == job["entities_count"]
    assert set(exported) == set(searched)
    assert all(isinstance(row["file_name"], str) for row in rows)


async def test_too_large_export_is_rejected(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(export_max_entities=10)
    job, status = await _export(session, server, auth_headers, entity_type="IMAGES")
    assert job["status"] == "INIT" and job["entities_count"] == server.info.n_images > 10
    assert status["status"] == "REJECTED" and status["download_uri"] is None
    assert "10" in status["result_message"]
    reply = await fetch(session, f"{_base(server)}/export_download/{job['id']}")
    assert reply.status == 409 and "REJECTED" in reply.detail


@pytest.mark.parametrize("slack, outcome", [(0, "COMPLETED"), (-1, "REJECTED")])
async def test_limit_is_inclusive(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    start_server: StartServer,
    auth_headers: dict[str, str],
    slack: int,
    outcome: str,
) -> None:
    params = {"labels": '["cat"]'}
    count = (await _export(session, demo_server, auth_headers, **params))[0]["entities_count"]
    server = start_server(export_max_entities=count + slack)
    _, status = await _export(session, server, auth_headers, **params)
    assert status["status"] == outcome, status


async def test_failing_export_reports_failed(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(export_fault="failed")
    job, status = await _export(session, server, auth_headers, entity_type="IMAGES")
    assert status["status"] == "FAILED" and status["download_uri"] is None
    assert isinstance(status["result_message"], str) and status["result_message"]
    reply = await fetch(session, f"{_base(server)}/export_download/{job['id']}")
    assert reply.status == 409


async def test_job_goes_through_in_progress(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(export_delay_ms=400)
    params = {"file_name": "all", "export_format": "json"}
    started = await fetch(session, f"{_base(server)}/export_context_async", params, auth_headers)
    task_id = started.json()["id"]
    first = await fetch(
        session, f"{_base(server)}/export_status", {"export_task_id": task_id}, auth_headers
    )
    assert first.json()["status"] == "IN_PROGRESS" and first.json()["download_uri"] is None
    early = await fetch(session, f"{_base(server)}/export_download/{task_id}")
    assert early.status == 409
    final = await wait_for_export(session, _base(server), task_id, auth_headers)
    assert final["status"] == "COMPLETED"


async def test_include_images_says_metadata_only(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    _, status = await _export(
        session, demo_server, auth_headers, labels='["zebra"]', include_images="true"
    )
    assert status["status"] == "COMPLETED"
    assert "metadata only" in status["result_message"]


async def test_export_needs_a_token_but_download_does_not(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    reply = await fetch(
        session, f"{_base(demo_server)}/export_context_async", {"labels": '["zebra"]'}
    )
    assert reply.status == 401
    _, status = await _export(session, demo_server, auth_headers, labels='["zebra"]')
    assert (await fetch(session, demo_server.base_url + status["download_uri"])).status == 200


@pytest.mark.parametrize("task_id", ["../../etc/passwd", "x" * 36, "..%2F..%2Fetc"])
async def test_a_task_id_that_is_not_a_job_is_404_and_reads_no_file(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    task_id: str,
) -> None:
    # Jobs are kept as <task id>.json files (shared by --workers): only a uuid names one.
    params = {"export_task_id": task_id}
    reply = await fetch(session, f"{_base(demo_server)}/export_status", params, auth_headers)
    assert reply.status == 404 and "Export task not found" in reply.detail
