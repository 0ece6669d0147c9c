"""Error answers of the local server: 401, 404, 405, 409, 422 naming `loc`; never a 5xx."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import yarl
from helpers_server import Reply, StartServer, explore_url, fetch, import_small_dataset, vql

from runner.api.auth import Credentials, bearer_header, mint_token
from runner.server.config import ServerConfig
from runner.server.errors import MAX_ECHO_CHARS
from runner.server.lifecycle import ServerThread

GOOD = {"entity_type": "IMAGES", "caption": "a dog"}
UUID = "0b7c9a56-3c1e-4a55-9b1f-5f8b0c1d2e3f"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A dataset with captions but no labels (no IMAGE_TAGGING), auth off."""
    root = tmp_path_factory.mktemp("bare")
    rows = [{"file_name": f"{i}.jpg", "caption": f"a photo of thing {i}"} for i in range(12)]
    import_small_dataset(root, "bare", rows)
    with ServerThread(ServerConfig(root / "bare", auth=False)) as server:
        yield server


@pytest.fixture(scope="module")
def captionless_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A dataset whose items have no captions (no CAPTION_IMAGES), auth off."""
    root = tmp_path_factory.mktemp("captionless")
    rows = [{"file_name": f"{i}.jpg", "labels": ["cat"]} for i in range(5)]
    import_small_dataset(root, "captionless", rows)
    with ServerThread(ServerConfig(root / "captionless", auth=False)) as server:
        yield server


def _assert_detail(reply: Reply, status: int) -> None:
    assert reply.status == status, reply
    detail = reply.detail
    assert (isinstance(detail, str) and detail) or (isinstance(detail, list) and detail)


# --- 401 --------------------------------------------------------------------------------------


def _tokens(creds: Credentials) -> list[tuple[str, dict[str, str]]]:
    now = time.time()
    return [
        ("missing", {}),
        ("not-bearer", {"Authorization": "Basic dXNlcjpwYXNz"}),
        ("empty-bearer", {"Authorization": "Bearer "}),
        ("garbage", bearer_header("not.a.jwt")),
        ("expired", bearer_header(mint_token(creds, ttl_s=600, now=now - 3600))),
        ("wrong-secret", bearer_header(mint_token(Credentials(creds.api_key, "nope")))),
        ("unknown-key", bearer_header(mint_token(Credentials("stranger", creds.api_secret)))),
    ]


@pytest.mark.parametrize(
    "case",
    ["missing", "not-bearer", "empty-bearer", "garbage", "expired", "wrong-secret", "unknown-key"],
)
async def test_bad_tokens_get_401(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    api_credentials: Credentials,
    case: str,
) -> None:
    headers = dict(_tokens(api_credentials))[case]
    reply = await fetch(
        session, explore_url(demo_server.base_url, demo_server.dataset_id), GOOD, headers
    )
    _assert_detail(reply, 401)
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert api_credentials.api_secret not in reply.raw.decode()


async def test_token_ttl_expires_tokens_by_age(
    session: aiohttp.ClientSession, start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(token_ttl_s=30)
    url = explore_url(server.base_url, server.dataset_id)
    fresh = bearer_header(mint_token(api_credentials, ttl_s=600))
    old = bearer_header(mint_token(api_credentials, ttl_s=600, now=time.time() - 60))
    assert (await fetch(session, url, GOOD, fresh)).status == 200
    reply = await fetch(session, url, GOOD, old)
    _assert_detail(reply, 401)
    assert "expired" in reply.detail


async def test_no_auth_mode_needs_no_token(
    session: aiohttp.ClientSession, bare_server: ServerThread
) -> None:
    reply = await fetch(session, explore_url(bare_server.base_url, bare_server.dataset_id), GOOD)
    assert reply.status == 200, reply


# --- 404, 405 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/dataset/{other}",
        "/api/v1/enrichment/{other}/context",
        "/api/v1/explore/{other}?entity_type=IMAGES",
        "/api/v1/dataset/{other}/export_context_async?entity_type=IMAGES",
        "/api/v1/dataset/{other}/export_status?export_task_id=x",
        "/api/v1/dataset/{dataset}/export_status?export_task_id=no-such-task",
        "/api/v1/dataset/{dataset}/export_download/no-such-task",
        "/api/v1/no/such/route",
        "/nothing-here",
    ],
)
async def test_not_found(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    path: str,
) -> None:
    url = demo_server.base_url + path.format(
        other="no-such-dataset", dataset=demo_server.dataset_id
    )
    _assert_detail(await fetch(session, url, headers=auth_headers), 404)


async def test_unknown_route_is_404_even_without_token(
    session: aiohttp.ClientSession, demo_server: ServerThread
) -> None:
    _assert_detail(await fetch(session, f"{demo_server.base_url}/api/v1/nope"), 404)


async def test_wrong_method_is_405_with_detail(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    url = explore_url(demo_server.base_url, demo_server.dataset_id)
    async with session.post(url, headers=auth_headers) as response:
        reply = Reply(response.status, response.headers, await response.read())
    _assert_detail(reply, 405)


# --- 409 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["INDEXING", "ERROR", "DRAFT"])
async def test_dataset_not_ready_is_409(
    session: aiohttp.ClientSession,
    start_server: StartServer,
    auth_headers: dict[str, str],
    status: str,
) -> None:
    server = start_server(dataset_status=status)
    info = await fetch(
        session, f"{server.base_url}/api/v1/dataset/{server.dataset_id}", headers=auth_headers
    )
    assert info.json()["status_new"] == status
    reply = await fetch(
        session, explore_url(server.base_url, server.dataset_id), GOOD, auth_headers
    )
    _assert_detail(reply, 409)
    assert "READY" in reply.detail


@pytest.mark.parametrize(
    "params, enrichment",
    [
        pytest.param(
            {"vql": vql({"issues": {"op": "issue", "value": "blur", "mode": "in"}})},
            "ISSUES",
            id="issues",
        ),
        pytest.param({"entity_type": "OBJECTS"}, "OBJECT_DETECTION", id="objects"),
    ],
)
async def test_missing_enrichment_on_demo_is_409(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    params: dict[str, str],
    enrichment: str,
) -> None:
    query = {"entity_type": "IMAGES", **params}
    reply = await fetch(
        session, explore_url(demo_server.base_url, demo_server.dataset_id), query, auth_headers
    )
    _assert_detail(reply, 409)
    assert enrichment in reply.detail


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"labels": '["cat"]'}, id="labels-param"),
        pytest.param({"vql": vql({"labels": {"op": "one_of", "value": ["cat"]}})}, id="labels-vql"),
    ],
)
async def test_labels_without_tagging_is_409(
    session: aiohttp.ClientSession, bare_server: ServerThread, params: dict[str, str]
) -> None:
    query = {"entity_type": "IMAGES", **params}
    reply = await fetch(session, explore_url(bare_server.base_url, bare_server.dataset_id), query)
    _assert_detail(reply, 409)
    assert "IMAGE_TAGGING" in reply.detail


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"caption": "cat"}, id="caption"),
        pytest.param({"vql": vql({"text": {"op": "fts", "value": "cat"}})}, id="fts"),
        pytest.param({"vql": vql({"text": {"op": "semantic", "value": "cat"}})}, id="semantic"),
    ],
)
async def test_text_search_without_captions_is_409(
    session: aiohttp.ClientSession, captionless_server: ServerThread, params: dict[str, str]
) -> None:
    query = {"entity_type": "IMAGES", **params}
    url = explore_url(captionless_server.base_url, captionless_server.dataset_id)
    reply = await fetch(session, url, query)
    _assert_detail(reply, 409)
    assert "CAPTION_IMAGES" in reply.detail


async def test_enrichment_context_of_bare_dataset(
    session: aiohttp.ClientSession, captionless_server: ServerThread
) -> None:
    url = f"{captionless_server.base_url}/api/v1/enrichment/{captionless_server.dataset_id}/context"
    models = (await fetch(session, url)).json()["dataset_enrichment_models"]["enrichment_models"]
    assert set(models) == {"IMAGE_TAGGING"}


# --- 422 --------------------------------------------------------------------------------------

V = "vql"
BAD_PARAMS = [
    pytest.param({"caption": "x"}, ["query", "entity_type"], "missing", id="no-entity-type"),
    pytest.param({"entity_type": "VIDEOS"}, ["query", "entity_type"], "enum", id="bad-entity-type"),
    pytest.param({"threshold": "abc"}, ["query", "threshold"], "int_parsing", id="threshold-text"),
    pytest.param({"threshold": "2.5"}, ["query", "threshold"], "int_parsing", id="threshold-float"),
    pytest.param({"threshold": "5"}, ["query", "threshold"], "less_than_equal", id="threshold-5"),
    pytest.param(
        {"threshold": "-1"}, ["query", "threshold"], "greater_than_equal", id="threshold-neg"
    ),
    pytest.param(
        {"caption": "x", "textual_similarity_threshold": "high"},
        ["query", "textual_similarity_threshold"],
        "float_parsing",
        id="tst-text",
    ),
    pytest.param(
        {"caption": "x", "textual_similarity_threshold": "1.5"},
        ["query", "textual_similarity_threshold"],
        "value_error",
        id="tst-above-1",
    ),
    pytest.param(
        {"caption": "x", "textual_similarity_threshold": "nan"},
        ["query", "textual_similarity_threshold"],
        "float_parsing",
        id="tst-nan",
    ),
    pytest.param(
        {"page_number": "-1"}, ["query", "page_number"], "greater_than_equal", id="page-neg"
    ),
    pytest.param({"page_number": "one"}, ["query", "page_number"], "int_parsing", id="page-text"),
    pytest.param(
        {"page_number": "9" * 40}, ["query", "page_number"], "int_parsing", id="page-huge"
    ),
    pytest.param({"caption": ""}, ["query", "caption"], "string_too_short", id="caption-empty"),
    pytest.param({"caption": "a\x00b"}, ["query", "caption"], "value_error", id="caption-nul"),
    pytest.param(
        {"caption": "w" * 5000}, ["query", "caption"], "string_too_long", id="caption-5000"
    ),
    pytest.param(
        {"image_caption": " "}, ["query", "image_caption"], "string_too_short", id="old-caption"
    ),
    pytest.param({"labels": "cat"}, ["query", "labels"], "json_invalid", id="labels-not-json"),
    pytest.param({"labels": '{"a": 1}'}, ["query", "labels"], "list_type", id="labels-object"),
    pytest.param({"labels": "[1]"}, ["query", "labels", 0], "string_type", id="labels-number"),
    pytest.param({"tags": '["nope"]'}, ["query", "tags", 0], "uuid_parsing", id="tags-not-uuid"),
    pytest.param({V: "[{"}, ["query", V], "json_invalid", id="vql-not-json"),
    pytest.param({V: "[" * 3000}, ["query", V], "json_invalid", id="vql-deep"),
    pytest.param({V: '{"text": {}}'}, ["query", V], "list_type", id="vql-object"),
    pytest.param({V: "[1]"}, ["query", V, 0], "dict_type", id="vql-item-number"),
    pytest.param({V: '[{"colour": {}}]'}, ["query", V, 0], "value_error", id="vql-unknown-filter"),
    pytest.param(
        {V: vql({"text": {"op": "fts", "value": "a"}, "labels": {}})},
        ["query", V, 0],
        "value_error",
        id="vql-two-keys",
    ),
    pytest.param(
        {V: vql({"text": {"op": "regex", "value": "a"}})},
        ["query", V, 0, "text", "op"],
        "literal_error",
        id="vql-text-op",
    ),
    pytest.param(
        {V: vql({"text": {"op": "fts"}})},
        ["query", V, 0, "text", "value"],
        "missing",
        id="vql-no-value",
    ),
    pytest.param(
        {V: vql({"text": {"op": "fts", "value": 3}})},
        ["query", V, 0, "text", "value"],
        "string_type",
        id="vql-value-number",
    ),
    pytest.param(
        {V: vql({"text": {"op": "semantic", "value": "a", "threshold": 1.5}})},
        ["query", V, 0, "text", "threshold"],
        "value_error",
        id="vql-threshold-above-1",
    ),
    pytest.param(
        {V: vql({"text": {"op": "semantic", "value": "a", "threshold": "high"}})},
        ["query", V, 0, "text", "threshold"],
        "float_parsing",
        id="vql-threshold-string",
    ),
    pytest.param(
        {V: vql({"text": {"op": "fts", "value": "a", "colour": 1}})},
        ["query", V, 0, "text", "colour"],
        "extra_forbidden",
        id="vql-extra-key",
    ),
    pytest.param(
        {V: vql({"labels": {"op": "one_of", "value": []}})},
        ["query", V, 0, "labels", "value"],
        "too_short",
        id="vql-labels-empty",
    ),
    pytest.param(
        {V: vql({"labels": {"op": "equals", "value": ["cat"]}})},
        ["query", V, 0, "labels", "op"],
        "literal_error",
        id="vql-labels-op",
    ),
    pytest.param(
        {V: vql({"tags": {"op": "is", "value": ["x"]}})},
        ["query", V, 0, "tags", "value", 0],
        "uuid_parsing",
        id="vql-tags-uuid",
    ),
    pytest.param(
        {V: vql({"duplicates": {"op": "duplicates", "value": [0.5]}})},
        ["query", V, 0, "duplicates", "value"],
        "float_type",
        id="vql-duplicates-string",
    ),
    pytest.param(
        {V: vql({"uniqueness": {"op": "uniqueness", "value": -0.1}})},
        ["query", V, 0, "uniqueness", "value"],
        "value_error",
        id="vql-uniqueness-negative",
    ),
    pytest.param(
        {V: vql({"issues": {"op": "issue", "value": "blur", "mode": "sideways"}})},
        ["query", V, 0, "issues", "mode"],
        "literal_error",
        id="vql-issues-mode",
    ),
    pytest.param(
        {V: vql({"text": {"op": "fts", "value": "a"}}, {"text": {"op": "semantic", "value": "b"}})},
        ["query", V, 1, "text"],
        "value_error",
        id="vql-two-texts",
    ),
    pytest.param(
        {"caption": "a", V: vql({"text": {"op": "fts", "value": "b"}})},
        ["query", V, 0, "text"],
        "value_error",
        id="caption-and-vql-text",
    ),
    pytest.param(
        {"labels": '["cat"]', V: vql({"labels": {"op": "one_of", "value": ["dog"]}})},
        ["query", V, 0, "labels"],
        "value_error",
        id="labels-twice",
    ),
]


@pytest.mark.parametrize("params, loc, kind", BAD_PARAMS)
async def test_bad_parameter_is_422_naming_it(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    params: dict[str, str],
    loc: list[str | int],
    kind: str,
) -> None:
    missing_entity_type = kind == "missing" and loc == ["query", "entity_type"]
    query = dict(params) if missing_entity_type else {"entity_type": "IMAGES", **params}
    reply = await fetch(
        session, explore_url(demo_server.base_url, demo_server.dataset_id), query, auth_headers
    )
    _assert_detail(reply, 422)
    issues = reply.detail
    assert all(set(issue) == {"type", "loc", "msg", "input"} for issue in issues)
    assert [loc, kind] in [[issue["loc"], issue["type"]] for issue in issues], issues


async def test_echoed_input_is_cut_and_nul_free(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    long_value = "\x00" + "w" * 4999
    query = {"entity_type": "IMAGES", "caption": long_value}
    reply = await fetch(
        session, explore_url(demo_server.base_url, demo_server.dataset_id), query, auth_headers
    )
    _assert_detail(reply, 422)
    echoed = reply.detail[0]["input"]
    assert "\x00" not in echoed and echoed.startswith("\\x00")
    assert len(echoed) < MAX_ECHO_CHARS + 40 < len(long_value)
    assert b"\\u0000" not in reply.raw


async def test_export_parameters_are_validated(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    base = f"{demo_server.base_url}/api/v1/dataset/{demo_server.dataset_id}"
    query = {"export_format": "xml", "include_images": "maybe"}
    reply = await fetch(session, f"{base}/export_context_async", query, auth_headers)
    _assert_detail(reply, 422)
    assert {("export_format",), ("include_images",)} <= {tuple(i["loc"][1:]) for i in reply.detail}
    reply = await fetch(session, f"{base}/export_status", {}, auth_headers)
    _assert_detail(reply, 422)
    assert reply.detail[0]["loc"] == ["query", "export_task_id"]


# --- hostile input: never a 5xx ---------------------------------------------------------------

HOSTILE = [
    pytest.param('"', id="quote"),
    pytest.param('"unbalanced', id="open-quote"),
    pytest.param("NEAR(", id="near"),
    pytest.param("NEAR(dog cat, 2)", id="near-full"),
    pytest.param("*", id="star"),
    pytest.param("dog*", id="prefix"),
    pytest.param("dog AND OR NOT cat", id="boolean"),
    pytest.param("caption:dog", id="column-filter"),
    pytest.param("^dog", id="caret"),
    pytest.param("{caption}: dog", id="column-set"),
    pytest.param("(((", id="parens"),
    pytest.param("' OR 1=1 --", id="sql"),
    pytest.param("\x00", id="nul"),
    pytest.param("dog\x00cat", id="inner-nul"),
    pytest.param("\u202e\u0301\ufeff", id="odd-unicode"),
    pytest.param("🐶 " * 50, id="emoji"),
    pytest.param("dog " * 1250, id="5000-chars"),
    pytest.param("%", id="percent"),
    pytest.param("\\", id="backslash"),
]


def _placements(value: str) -> list[dict[str, str]]:
    return [
        {"caption": value},
        {"vql": vql({"text": {"op": "fts", "value": value}})},
        {"vql": vql({"text": {"op": "semantic", "value": value}})},
        {"labels": json.dumps([value])},
        {"vql": vql({"labels": {"op": "one_of", "value": [value]}})},
        {"tags": json.dumps([value])},
        {"threshold": value},
        {"page_number": value},
        {"vql": value},
    ]


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_values_never_give_5xx(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    value: str,
) -> None:
    url = explore_url(demo_server.base_url, demo_server.dataset_id)
    for params in _placements(value):
        reply = await fetch(session, url, {"entity_type": "IMAGES", **params}, auth_headers)
        assert reply.status in (200, 422), (params, reply)
        if reply.status == 422:
            assert isinstance(reply.detail, list) and reply.detail


@pytest.mark.parametrize(
    "raw_query",
    [
        pytest.param("entity_type=IMAGES&caption=%FF%FE", id="bad-utf8"),
        pytest.param("entity_type=IMAGES&caption=%ED%A0%80", id="surrogate-utf8"),
        pytest.param("entity_type=IMAGES&caption=%zz", id="bad-escape"),
        pytest.param("entity_type=IMAGES&caption=%00", id="nul"),
        pytest.param("entity_type=IMAGES&caption=" + "%22" * 5000, id="5000-quotes"),
        pytest.param("entity_type=IMAGES&vql=" + "%5B" * 5000, id="5000-brackets"),
        pytest.param(
            "entity_type=IMAGES&entity_type=OBJECTS&page_number=0&page_number=-1", id="repeats"
        ),
        pytest.param(
            "entity_type=IMAGES&vql=%5B%7B%22text%22%3A%7B%22op%22%3A%22fts%22%2C%22value%22%3A%22%5Cud800%22%7D%7D%5D",
            id="json-lone-surrogate",
        ),
        pytest.param("&&&=&=", id="empty-pairs"),
    ],
)
async def test_raw_query_strings_never_give_5xx(
    session: aiohttp.ClientSession,
    demo_server: ServerThread,
    auth_headers: dict[str, str],
    raw_query: str,
) -> None:
    url = yarl.URL(
        f"{explore_url(demo_server.base_url, demo_server.dataset_id)}?{raw_query}", encoded=True
    )
    async with session.get(url, headers=auth_headers) as response:
        reply = Reply(response.status, response.headers, await response.read())
    assert reply.status < 500, reply
    if reply.status >= 400:
        _assert_detail(reply, reply.status)


async def test_hostile_export_filters_never_give_5xx(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    base = f"{demo_server.base_url}/api/v1/dataset/{demo_server.dataset_id}"
    for value in ('"', "NEAR(", "*", "\x00", "x" * 5000):
        params = {"vql": vql({"text": {"op": "fts", "value": value}}), "file_name": value}
        reply = await fetch(session, f"{base}/export_context_async", params, auth_headers)
        assert reply.status in (200, 422), reply
