"""The local server answers as the hosted API's documentation says, over real HTTP (issue 9).

Exports (required parameters, the documented metadata.json, every way a job can end), searchable
READ ONLY / PARTIAL INDEX datasets, feature flags (`user_config`, 403), unknown parameters, and the
deliberate contract changes a contract checker is tested on.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pyarrow.parquet as pq
import pytest
from helpers_server import Reply, StartServer, explore_url, fetch, vql, wait_for_export

from runner.server.config import FEATURES, ServerConfig, fault_fields
from runner.server.lifecycle import ServerThread

CAPTION = {"entity_type": "IMAGES", "caption": "a dog catching a frisbee"}
SEMANTIC = {"entity_type": "IMAGES", "vql": vql({"text": {"op": "semantic", "value": "a dog"}})}
FTS = {"entity_type": "IMAGES", "vql": vql({"text": {"op": "fts", "value": "dog"}})}
LABELS = {"entity_type": "IMAGES", "labels": '["dog"]'}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _base(server: ServerThread) -> str:
    return f"{server.base_url}/api/v1/dataset/{server.dataset_id}"


async def _explore(
    session: aiohttp.ClientSession, server: ServerThread, headers: dict[str, str], **params: str
) -> Reply:
    return await fetch(session, explore_url(server.base_url, server.dataset_id), params, headers)


async def _start_export(
    session: aiohttp.ClientSession, server: ServerThread, headers: dict[str, str], **params: str
) -> Reply:
    query = {"file_name": "dogs", "export_format": "json", "labels": '["dog"]', **params}
    return await fetch(session, f"{_base(server)}/export_context_async", query, headers)


# --- exports ----------------------------------------------------------------------------------


async def test_export_needs_file_name_and_export_format(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    url = f"{_base(demo_server)}/export_context_async"
    reply = await fetch(session, url, {"entity_type": "IMAGES"}, auth_headers)
    assert reply.status == 422, reply
    missing = [item["loc"] for item in reply.detail if item["type"] == "missing"]
    assert missing == [["query", "export_format"], ["query", "file_name"]]


async def test_metadata_json_is_the_documented_object(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    started = (await _start_export(session, demo_server, auth_headers)).json()
    status = await wait_for_export(session, _base(demo_server), started["id"], auth_headers)
    download = await fetch(session, demo_server.base_url + status["download_uri"])
    with zipfile.ZipFile(io.BytesIO(download.raw)) as archive:
        document = json.loads(archive.read("metadata.json"))
    assert document["info"]["dataset_id"] == demo_server.dataset_id
    assert document["info"]["entities_count"] == started["entities_count"]
    items = document["media_items"]
    assert len(items) == started["entities_count"] > 0
    for item in items:
        assert isinstance(item["media_id"], str) and isinstance(item["file_name"], str)
        assert item["file_path"].endswith(item["file_name"])
        assert isinstance(item["cluster_id"], str) and 0.0 <= item["uniqueness_score"] <= 1.0
        labels = [m["value"] for m in item["metadata_items"] if m["type"] == "label"]
        assert "dog" in labels  # the export asked for labels ["dog"]


async def test_rejected_at_start(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(**fault_fields(["export=rejected"]))
    started = (await _start_export(session, server, auth_headers)).json()
    assert started["status"] == "REJECTED" and started["result_message"]
    status = await wait_for_export(session, _base(server), started["id"], auth_headers)
    assert status["status"] == "REJECTED" and status["download_uri"] is None


@pytest.mark.parametrize("spelling", ["canceled", "cancelled"])
async def test_cancelled_job_says_so_in_its_spelling(
    session: aiohttp.ClientSession,
    start_server: StartServer,
    auth_headers: dict[str, str],
    spelling: str,
) -> None:
    server = start_server(**fault_fields([f"export={spelling}"]))
    started = (await _start_export(session, server, auth_headers)).json()
    assert started["status"] == "INIT" and isinstance(started["progress"], float)
    status = await wait_for_export(session, _base(server), started["id"], auth_headers)
    assert status["status"] == spelling.upper() and status["download_uri"] is None
    assert spelling in status["result_message"]
    download = await fetch(session, f"{_base(server)}/export_download/{started['id']}")
    assert download.status == 409


async def test_error_in_a_200(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(**fault_fields(["export=error"]))
    reply = await _start_export(session, server, auth_headers)
    assert reply.status == 200
    assert set(reply.json()) == {"error"} and "exceeds threshold" in reply.json()["error"]


async def test_start_answer_with_the_id_alone(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(**fault_fields(["export=id-only"]))
    started = (await _start_export(session, server, auth_headers)).json()
    assert set(started) == {"id"}
    status = await wait_for_export(session, _base(server), started["id"], auth_headers)
    assert status["status"] == "COMPLETED"


@pytest.mark.parametrize("export_format", ["parquet", "json"])
async def test_older_file_name_column(
    session: aiohttp.ClientSession,
    start_server: StartServer,
    auth_headers: dict[str, str],
    export_format: str,
) -> None:
    server = start_server(**fault_fields(["contract=image-filename"]))
    started = await _start_export(session, server, auth_headers, export_format=export_format)
    status = await wait_for_export(session, _base(server), started.json()["id"], auth_headers)
    download = await fetch(session, server.base_url + status["download_uri"])
    with zipfile.ZipFile(io.BytesIO(download.raw)) as archive:
        data = archive.read(f"metadata.{export_format}")
    if export_format == "parquet":
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    else:
        rows = json.loads(data)["media_items"]
    assert rows and all("file_name" not in r and r["image_filename"].endswith(".jpg") for r in rows)


# --- dataset status and feature flags ---------------------------------------------------------


@pytest.mark.parametrize("status", ["READ ONLY", "PARTIAL INDEX"])
async def test_read_only_and_partial_index_are_searchable(
    session: aiohttp.ClientSession,
    start_server: StartServer,
    auth_headers: dict[str, str],
    status: str,
) -> None:
    server = start_server(dataset_status=status)
    record = await fetch(session, _base(server), {}, auth_headers)
    assert record.json()["status_new"] == status
    reply = await _explore(session, server, auth_headers, **CAPTION)
    assert reply.status == 200 and reply.json()["clusters"]
    started = await _start_export(session, server, auth_headers)
    assert started.status == 200 and started.json()["status"] == "INIT"


async def test_user_config_lists_every_feature(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    url = f"{demo_server.base_url}/api/v1/user_config"
    body = (await fetch(session, url, {"dataset_id": demo_server.dataset_id}, auth_headers)).json()
    assert body == {
        "dataset_id": demo_server.dataset_id,
        "features": dict.fromkeys(FEATURES, True),
    }
    unknown = await fetch(session, url, {"dataset_id": "nope"}, auth_headers)
    assert unknown.status == 404 and unknown.detail
    assert (await fetch(session, url, {"dataset_id": demo_server.dataset_id})).status == 401


@pytest.mark.parametrize(
    "feature, refused, allowed",
    [
        pytest.param("semantic_search", SEMANTIC, CAPTION, id="semantic"),
        pytest.param("captions_search", CAPTION, SEMANTIC, id="captions"),
        pytest.param("full_text_search", FTS, CAPTION, id="fts"),
        pytest.param("labels_search", LABELS, FTS, id="labels"),
    ],
)
async def test_a_disabled_feature_is_403_for_its_requests_only(
    session: aiohttp.ClientSession,
    start_server: StartServer,
    auth_headers: dict[str, str],
    feature: str,
    refused: dict[str, str],
    allowed: dict[str, str],
) -> None:
    server = start_server(disabled_features=frozenset({feature}))
    config = await fetch(
        session,
        f"{server.base_url}/api/v1/user_config",
        {"dataset_id": server.dataset_id},
        auth_headers,
    )
    assert config.json()["features"] == {name: name != feature for name in FEATURES}
    reply = await _explore(session, server, auth_headers, **refused)
    assert reply.status == 403 and feature in reply.detail
    assert (await _explore(session, server, auth_headers, **allowed)).status == 200
    export = await _start_export(session, server, auth_headers, **refused)
    assert export.status == 403 and feature in export.detail


def test_an_unknown_feature_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="disabled_features: 'sematic_search'"):
        ServerConfig(disabled_features=frozenset({"sematic_search"}))


async def test_fts_needs_captions_not_the_caption_enrichment(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(hidden_enrichments=frozenset({"CAPTION_IMAGES"}))
    url = f"{server.base_url}/api/v1/enrichment/{server.dataset_id}/context"
    context = (await fetch(session, url, {}, auth_headers)).json()
    assert "CAPTION_IMAGES" not in context["dataset_enrichment_models"]["enrichment_models"]
    assert (await _explore(session, server, auth_headers, **FTS)).status == 200
    caption = await _explore(session, server, auth_headers, **CAPTION)
    assert caption.status == 409 and "CAPTION_IMAGES" in caption.detail
    # Semantic search has the image embeddings (MULTIMODEL_IMAGE_ENCODING) to rank by.
    assert (await _explore(session, server, auth_headers, **SEMANTIC)).status == 200


# --- unknown parameters -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["page_size", "anchor_id", "captions"])
async def test_unknown_parameters_are_422_naming_them(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    name: str,
) -> None:
    reply = await _explore(session, demo_server, auth_headers, **CAPTION, **{name: "5"})
    assert reply.status == 422, reply
    assert [item["loc"] for item in reply.detail] == [["query", name]]
    assert reply.detail[0]["type"] == "extra_forbidden"
    export = await _start_export(session, demo_server, auth_headers, **{name: "5"})
    assert export.status == 422 and export.detail[0]["loc"] == ["query", name]


@pytest.mark.parametrize(
    "name, value",
    [
        pytest.param("labels", "[dog,puppy]", id="unquoted-labels"),
        pytest.param("tags", "0b7c9a56-3c1e-4a55-9b1f-5f8b0c1d2e3f", id="bare-tag-uuid"),
    ],
)
async def test_older_documentation_list_forms_are_422_naming_them(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    name: str,
    value: str,
) -> None:
    reply = await _explore(
        session, demo_server, auth_headers, entity_type="IMAGES", **{name: value}
    )
    assert reply.status == 422 and reply.detail[0]["loc"] == ["query", name]
    assert reply.detail[0]["type"] == "json_invalid"


# --- contract changes on purpose --------------------------------------------------------------


async def _first_page(
    session: aiohttp.ClientSession, server: ServerThread, headers: dict[str, str]
) -> dict[str, Any]:
    reply = await _explore(session, server, headers, **CAPTION, threshold="2")
    assert reply.status == 200, reply
    body: dict[str, Any] = reply.json()
    return body


async def test_score_type_flip_reports_similarity(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    start_server: StartServer,
    auth_headers: dict[str, str],
) -> None:
    plain = await _first_page(session, demo_server, auth_headers)
    flipped = await _first_page(
        session, start_server(contract_changes=frozenset({"score-type-flip"})), auth_headers
    )
    for before, after in zip(plain["clusters"], flipped["clusters"], strict=True):
        assert before["relevance_score_type"] == "cosine_distance"
        assert after["relevance_score_type"] == "cosine_similarity"
        assert after["relevance_score"] == pytest.approx(1.0 - before["relevance_score"])
        preview = after["previews"][0]
        assert preview["relevance_score_type"] == "cosine_similarity"
        assert preview["relevance_score"] == pytest.approx(
            1.0 - before["previews"][0]["relevance_score"]
        )


async def test_score_as_string_and_renamed_field(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    changes = fault_fields(["contract=score-as-string", "contract=rename-field"])
    body = await _first_page(session, start_server(**changes), auth_headers)
    for cluster in body["clusters"]:
        assert "relevance_score" not in cluster and isinstance(cluster["score"], str)
        float(cluster["score"])
        assert all("relevance_score" not in p and "score" in p for p in cluster["previews"])


async def test_legacy_shape_and_status(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    start_server: StartServer,
    auth_headers: dict[str, str],
) -> None:
    plain = await _first_page(session, demo_server, auth_headers)
    server = start_server(
        dataset_status="READ ONLY",
        contract_changes=frozenset({"legacy-shape", "legacy-status"}),
    )
    legacy = await _first_page(session, server, auth_headers)
    assert set(legacy) == {"clusters", "total_pages", "current_page"}
    assert legacy["current_page"] == 0 and legacy["total_pages"] >= 1
    for new, old in zip(plain["clusters"], legacy["clusters"], strict=True):
        assert (old["id"], old["entity_type"], old["size"]) == (
            new["cluster_id"],
            new["type"],
            new["n_images"],
        )
        assert [m["media_id"] for m in old["media"]] == [p["media_id"] for p in new["previews"]]
    last = await _explore(
        session,
        server,
        auth_headers,
        **CAPTION,
        threshold="2",
        page_number=str(legacy["total_pages"] - 1),
    )
    assert last.json()["clusters"] and last.json()["current_page"] == legacy["total_pages"] - 1
    past = await _explore(
        session,
        server,
        auth_headers,
        **CAPTION,
        threshold="2",
        page_number=str(legacy["total_pages"]),
    )
    assert past.json()["clusters"] == []
    record = (await fetch(session, _base(server), {}, auth_headers)).json()
    assert record["status"] == "READY" and "status_new" not in record


def test_a_bad_fault_spec_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="--fault contract=flip"):
        fault_fields(["contract=flip"])
    with pytest.raises(ValueError, match="--fault colour=red"):
        fault_fields(["colour=red"])
