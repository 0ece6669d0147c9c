"""The server answers a fixed set of searches as it did before its search path was made fast.

The reference (`tests/data/server_reference.json`, written by `tests/data/make_server_reference.py`
from the server before the rewrite) holds, per query, a digest of the page without its scores
(clusters, members, captions, labels, order) and every score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers_answers import QUERIES, summarise
from helpers_server import explore_url, fetch

from runner.server.lifecycle import ServerThread

REFERENCE = Path(__file__).parent / "data" / "server_reference.json"


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    answers: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return answers


def test_the_reference_covers_every_query(reference: dict[str, Any]) -> None:
    assert set(reference) == set(QUERIES)


@pytest.mark.parametrize("name", list(QUERIES))
async def test_same_page_as_before(
    name: str,
    reference: dict[str, Any],
    demo_server: ServerThread,
    auth_headers: dict[str, str],
) -> None:
    url = explore_url(demo_server.base_url, demo_server.dataset_id)
    async with aiohttp.ClientSession() as session:
        reply = await fetch(session, url, {"entity_type": "IMAGES", **QUERIES[name]}, auth_headers)
    assert reply.status == 200, reply
    got = summarise(reply.json()["clusters"])
    want = reference[name]
    assert got["n"] == want["n"]
    assert got["first"] == want["first"]
    assert got["digest"] == want["digest"], "same scores, different clusters, members or order"
    for (score, members), (want_score, want_members) in zip(
        got["scores"], want["scores"], strict=True
    ):
        assert score == pytest.approx(want_score, rel=1e-7, abs=1e-12)
        assert members == pytest.approx(want_members, rel=1e-7, abs=1e-12)
