"""VQL as clients write it, over real HTTP: the `"id"` key, labels ops `is`, `is_not`,
`not_one_of` (their meaning checked against the demo's media table), and `captions: null`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.parquet as pq
import pytest
from helpers_server import StartServer, all_pages, explore_url, fetch, import_small_dataset, vql

from runner.server.dataset import MEDIA_FILE
from runner.server.lifecycle import ServerThread

Held = frozenset[str]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(scope="module")
def labels_of(demo_dataset_dir: Path) -> dict[str, Held]:
    """media_id -> its labels, read from disk (not through the index)."""
    table = pq.read_table(demo_dataset_dir / MEDIA_FILE, columns=["media_id", "labels"])
    return {row["media_id"]: frozenset(row["labels"] or ()) for row in table.to_pylist()}


async def _matched(
    session: aiohttp.ClientSession,
    server: ServerThread,
    headers: dict[str, str],
    **params: str,
) -> list[str]:
    url = explore_url(server.base_url, server.dataset_id)
    pages = await all_pages(
        session, url, {"entity_type": "IMAGES", "threshold": "4", **params}, headers
    )
    return [p["media_id"] for page in pages for c in page for p in c["previews"]]


CASES: list[Any] = [
    pytest.param(
        [{"labels": {"op": "is", "value": ["dog", "person"]}}],
        lambda held: {"dog", "person"} <= held,
        id="is-every-value",
    ),
    pytest.param(
        [{"id": "label_filter", "labels": {"op": "is", "value": "dog"}}],
        lambda held: "dog" in held,
        id="is-one-string-with-id",
    ),
    pytest.param(
        [{"labels": {"op": "is_not", "value": ["dog", "person"]}}],
        lambda held: not {"dog", "person"} <= held,
        id="is-not-the-negation-of-is",
    ),
    pytest.param(
        [{"labels": {"op": "not_one_of", "value": ["dog", "cat"]}}],
        lambda held: not held & {"dog", "cat"},
        id="not-one-of-holds-none",
    ),
    pytest.param(
        [
            {"id": "a", "labels": {"op": "is", "value": ["dog"]}},
            {"id": "b", "labels": {"op": "not_one_of", "value": ["person"]}},
        ],
        lambda held: "dog" in held and "person" not in held,
        id="rules-and",
    ),
    pytest.param(
        [
            {"labels": {"op": "one_of", "value": ["dog", "cat"]}},
            {"labels": {"op": "is_not", "value": "dog"}},
        ],
        lambda held: "cat" in held and "dog" not in held,
        id="one-of-and-a-rule",
    ),
]


@pytest.mark.parametrize("filters, keeps", CASES)
async def test_labels_ops_mean_what_they_say(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    labels_of: dict[str, Held],
    filters: list[dict[str, Any]],
    keeps: Callable[[Held], bool],
) -> None:
    expected = {media_id for media_id, held in labels_of.items() if keeps(held)}
    assert 0 < len(expected) < len(labels_of)  # the case is not trivial on the demo
    found = await _matched(session, demo_server, auth_headers, vql=vql(*filters))
    assert len(found) == len(set(found))
    assert set(found) == expected


async def test_an_id_must_be_a_string(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    params = {
        "entity_type": "IMAGES",
        "vql": vql({"id": 7, "labels": {"op": "is", "value": "dog"}}),
    }
    reply = await fetch(
        session, explore_url(demo_server.base_url, demo_server.dataset_id), params, auth_headers
    )
    assert reply.status == 422 and reply.detail[0]["loc"] == ["query", "vql", 0, "id"]


async def test_captions_are_null_where_a_cluster_has_none(
    session: aiohttp.ClientSession, tmp_path: Path, start_server: StartServer
) -> None:
    rows: list[dict[str, Any]] = [
        {"file_name": f"c{i}.jpg", "caption": f"caption number {i}"} for i in range(6)
    ]
    rows += [{"file_name": f"n{i}.jpg", "labels": ["x"]} for i in range(6)]
    import_small_dataset(tmp_path, "mixed", rows)
    server = start_server(dataset_dir=tmp_path / "mixed", auth=False)
    url = explore_url(server.base_url, server.dataset_id)
    reply = await fetch(session, url, {"entity_type": "IMAGES", "threshold": "0"})
    clusters = reply.json()["clusters"]
    without = [c for c in clusters if all(p["caption"] is None for p in c["previews"])]
    with_some = [c for c in clusters if any(p["caption"] for p in c["previews"])]
    assert without and with_some
    assert all(c["captions"] is None for c in without)
    assert all(isinstance(c["captions"], list) and c["captions"] for c in with_some)
