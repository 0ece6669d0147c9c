"""ExploreClient against the local server: typed pages, error classification, tokens."""

from __future__ import annotations

import email.utils
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from runner.api import pages
from runner.api.auth import Credentials, mint_token
from runner.api.client import (
    BadBody,
    Cluster,
    ExploreClient,
    Page,
    Preview,
    SendTiming,
    Throttled,
    TokenSource,
    parse_page,
    parse_retry_after,
)
from runner.api.pacer import Pacer
from runner.errors import ApiError, AuthError, TransportError
from runner.server.lifecycle import ServerThread

StartServer = Callable[..., ServerThread]

FTS_DOG = {"entity_type": "IMAGES", "vql": json.dumps([{"text": {"op": "fts", "value": "dog"}}])}


def client_for(server: ServerThread, creds: Credentials, **kwargs: Any) -> ExploreClient:
    kwargs.setdefault("auth", TokenSource(credentials=creds))
    return ExploreClient(server.base_url, server.dataset_id, **kwargs)


# -- typed answers from the real server ---------------------------------------------------------


async def test_dataset_context_and_page_are_typed(
    demo_server: ServerThread, api_credentials: Credentials
) -> None:
    async with client_for(demo_server, api_credentials) as client:
        dataset = await client.get_dataset()
        context = await client.get_enrichment_context()
        timing = SendTiming()
        page = await client.search_page(FTS_DOG, 0, request_key="k1", timing=timing)
    assert dataset.status == "READY"
    assert dataset.dataset_id == demo_server.dataset_id
    assert dataset.n_images is not None and dataset.n_images > 0
    assert {"CAPTION_IMAGES", "IMAGE_TAGGING"} <= context.enrichments
    assert isinstance(page, Page) and page.page_number == 0
    assert 0 < len(page.clusters) <= 100
    cluster = page.clusters[0]
    assert isinstance(cluster, Cluster) and isinstance(cluster.previews[0], Preview)
    assert cluster.relevance_score_type == "bm25"
    assert cluster.similarity_threshold == "0"
    assert page.n_previews == sum(len(c.previews) for c in page.clusters)
    assert all("dog" in (p.caption or "").lower() for c in page.clusters for p in c.previews[:1])
    assert timing.sent_at == pytest.approx(time.time(), abs=30)
    assert timing.latency_s > 0


async def test_a_page_past_the_end_is_empty(
    demo_server: ServerThread, api_credentials: Credentials
) -> None:
    async with client_for(demo_server, api_credentials) as client:
        page = await client.search_page(FTS_DOG, 10_000)
    assert page.clusters == () and page.n_previews == 0


# -- parsing the variants the contract warns about ----------------------------------------------


def body(**root: Any) -> bytes:
    return orjson.dumps(root)


def test_parse_tolerates_documented_variants() -> None:
    raw = body(
        clusters=[
            {
                "cluster_id": 17,
                "n_images": "3",
                "similarity_threshold": 2,
                "relevance_score": "0.25",
                "relevance_score_type": "cosine_distance",
                "previews": [
                    {"media_id": "m1", "relevance_score": 0.25, "labels": None},
                    {"media_id": "m2", "relevance_score": None, "labels": [{"name": "dog"}]},
                ],
                "labels": None,
                "user_tags": None,
            },
            {"cluster_id": "c2", "previews": None, "labels": ["cat"]},
        ],
        total_pages="4",
        current_page=0,
    )
    page = parse_page(raw, 3)
    first, second = page.clusters
    assert page.total_pages == 4 and page.page_number == 3
    assert first.cluster_id == "17" and first.n_images == 3
    assert first.similarity_threshold == "2" and first.relevance_score == 0.25
    assert first.labels is None and first.previews[0].labels is None
    assert first.previews[1].labels == ("dog",) and first.previews[1].relevance_score is None
    assert second.previews == () and second.n_images == 0 and second.labels == ("cat",)


@pytest.mark.parametrize(
    "raw, reason",
    [
        pytest.param(b"<html>502</html>", "not JSON", id="html"),
        pytest.param(b'{"clusters": [{"cluster_id": "a"', "not JSON", id="truncated"),
        pytest.param(body(detail="x"), "no clusters", id="no-clusters"),
        pytest.param(body(clusters=[{"previews": []}]), "no cluster_id", id="cluster-without-id"),
        pytest.param(
            body(clusters=[{"cluster_id": "a", "previews": [{"caption": "x"}]}]),
            "no media_id",
            id="preview-without-media-id",
        ),
        pytest.param(
            body(clusters=[{"cluster_id": "a", "relevance_score": "high"}]),
            "not a number",
            id="score-not-a-number",
        ),
        pytest.param(body(clusters=[], total_pages=1.5), "not an integer", id="fractional-pages"),
        pytest.param(b"[1, 2]", "not an object", id="array"),
        pytest.param(
            body(clusters=[{"cluster_id": "a", "n_images": 2**31}]),
            "out of range.*n_images",
            id="count-beyond-int32",
        ),
    ],
)
def test_parse_refuses_bodies_that_are_not_the_contract(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_page(raw, 0)


@pytest.mark.parametrize(
    "cluster, preview, reason",
    [
        pytest.param({}, {"relevance_score": True}, "not a number", id="bool-preview-score"),
        pytest.param({"relevance_score": False}, {}, "not a number", id="bool-cluster-score"),
        pytest.param({"n_images": 3.5}, {}, "not an integer", id="fractional-count"),
        pytest.param({}, {"labels": "dog"}, "not a list", id="string-labels"),
        pytest.param({}, {"labels": ""}, "not a list", id="empty-string-labels"),
        pytest.param({"labels": "dog"}, {}, "not a list", id="string-cluster-labels"),
        pytest.param(
            {}, {"media_id": 7.5, "caption": 3, "media_thumb_uri": 5}, None, id="numbers-as-text"
        ),
    ],
)
def test_parse_is_as_strict_as_the_tolerant_reading(
    cluster: dict[str, Any], preview: dict[str, Any], reason: str | None
) -> None:
    # A lenient converter (Arrow's) takes each of these: true as 1.0, 3.5 as 3, "dog" as letters
    raw = body(
        clusters=[
            {
                "cluster_id": "c",
                "n_images": 1,
                **cluster,
                "previews": [{"media_id": "m", **preview}],
            }
        ]
    )
    if reason is None:
        page = parse_page(raw, 0)
        (only,) = page.clusters
        assert only.previews[0].media_id == "7.5" and only.previews[0].caption == "3"
        assert only.previews[0].media_thumb_uri == "5"
        assert page.data.to_pylist()[0]["previews"][0]["media_thumb_uri"] == "5"
        return
    with pytest.raises(ValueError, match=reason):
        parse_page(raw, 0)


def test_odd_but_valid_values_are_stored_as_the_clusters_read() -> None:
    raw = body(
        clusters=[
            {
                "cluster_id": "c",
                "n_images": 2,
                "relevance_score": 0.0,
                "labels": ["a", None],
                "captions": ["x", 5],
                "previews": [
                    {"media_id": "m1", "relevance_score": 1, "labels": [None, "b"]},
                    {"media_id": "m2", "relevance_score": 0.25, "labels": []},
                ],
            }
        ]
    )
    page = parse_page(raw, 0)
    (cluster,) = page.clusters
    assert cluster.labels == ("a", "None") and cluster.captions == ("x", "5")
    assert cluster.relevance_score == 0.0 and cluster.previews[0].relevance_score == 1.0
    assert [p.labels for p in cluster.previews] == [("None", "b"), ()]
    (stored,) = page.data.to_pylist()  # what a run stores says the same
    assert stored["labels"] == list(cluster.labels) and stored["relevance_score"] == 0.0
    assert [p["labels"] for p in stored["previews"]] == [["None", "b"], []]


async def test_the_fast_and_the_careful_reading_agree(
    demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    url = f"{demo_server.base_url}/api/v1/explore/{demo_server.dataset_id}"
    async with aiohttp.ClientSession(headers=auth_headers) as session:
        for text in ("dog", "pizza on a table", "a red bus"):
            vql = json.dumps([{"text": {"op": "fts", "value": text}}])
            query = {"entity_type": "IMAGES", "vql": vql, "page_number": "0"}
            async with session.get(url, params=query) as response:
                raw = await response.read()
            typed = pages._DECODER.decode(raw).clusters  # the server's pages take the fast path
            assert len(typed) > 0
            fast = pages._stored_array(typed)
            assert fast.equals(pages._stored_array(pages._careful(raw)[0]))
            # The thumbnail is stored: the URI the server sent for each preview.
            thumbs = fast.field("previews").flatten().field("media_thumb_uri")
            sent = [
                p["media_thumb_uri"] for c in orjson.loads(raw)["clusters"] for p in c["previews"]
            ]
            assert thumbs.to_pylist() == sent and thumbs.null_count == 0


# -- errors, classified -------------------------------------------------------------------------


async def test_unknown_dataset_is_api_error_404(
    demo_server: ServerThread, api_credentials: Credentials
) -> None:
    client = ExploreClient(
        demo_server.base_url, "no-such-dataset", auth=TokenSource(credentials=api_credentials)
    )
    async with client:
        with pytest.raises(ApiError) as caught:
            await client.get_dataset()
    assert caught.value.status == 404
    assert "Dataset not found" in str(caught.value)


async def test_bad_parameter_is_422_naming_the_field(
    demo_server: ServerThread, api_credentials: Credentials
) -> None:
    async with client_for(demo_server, api_credentials) as client:
        with pytest.raises(ApiError) as caught:
            await client.search_page({**FTS_DOG, "entity_type": "PLANETS"}, 0, request_key="k42")
    exc = caught.value
    assert exc.status == 422 and not isinstance(exc, Throttled | AuthError)
    assert "query.entity_type" in str(exc)
    assert "[request k42]" in str(exc) and exc.request_key == "k42"


async def test_wrong_secret_is_auth_error_without_the_token(demo_server: ServerThread) -> None:
    wrong = Credentials("vlbench-demo", "not-the-secret")
    auth = TokenSource(credentials=wrong)
    async with client_for(demo_server, wrong, auth=auth) as client:
        with pytest.raises(AuthError) as caught:
            await client.search_page(FTS_DOG, 0)
    _, headers = auth.current()
    token = headers["Authorization"].removeprefix("Bearer ")
    assert caught.value.status == 401
    for text in (str(caught.value), repr(caught.value), str(caught.value.detail)):
        assert token not in text and "not-the-secret" not in text
    assert auth.current()[0] == 2  # minted once, renewed once after the 401, then gave up


async def test_expired_token_is_renewed_once(
    start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(token_ttl_s=30)
    now = [time.time() - 100]  # the first token is 100 s old: expired for this server
    auth = TokenSource(credentials=api_credentials, clock=lambda: now[0])
    assert auth.current()[0] == 1
    now[0] = time.time()
    async with client_for(server, api_credentials, auth=auth) as client:
        page = await client.search_page(FTS_DOG, 0)
    assert page.clusters
    assert auth.current()[0] == 2


async def test_ready_token_cannot_be_renewed(
    start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(token_ttl_s=30)
    stale = mint_token(api_credentials, now=time.time() - 100)
    async with client_for(server, api_credentials, auth=TokenSource(token=stale)) as client:
        with pytest.raises(AuthError) as caught:
            await client.search_page(FTS_DOG, 0)
    assert "expired" in str(caught.value) and stale not in str(caught.value)


async def test_not_ready_dataset_is_409(
    start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(dataset_status="INDEXING")
    async with client_for(server, api_credentials) as client:
        dataset = await client.get_dataset()
        with pytest.raises(ApiError) as caught:
            await client.search_page(FTS_DOG, 0)
    assert dataset.status == "INDEXING"
    assert caught.value.status == 409 and "READY" in str(caught.value)


async def test_rate_limited_is_throttled_with_retry_after(
    start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(rate_limit=1)
    async with client_for(server, api_credentials) as client:
        await client.search_page(FTS_DOG, 0)
        with pytest.raises(Throttled) as caught:
            await client.search_page(FTS_DOG, 0)
    assert caught.value.status == 429
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1


async def test_server_errors_are_api_errors_with_5xx(
    start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(fail_rate=1.0)
    statuses = set()
    async with client_for(server, api_credentials) as client:
        for _ in range(6):
            with pytest.raises(ApiError) as caught:
                await client.search_page(FTS_DOG, 0)
            assert not isinstance(caught.value, Throttled)
            statuses.add(caught.value.status)
    assert statuses <= {500, 502, 503} and statuses


async def test_dropped_connection_is_transport_error(
    start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(drop_rate=1.0)
    async with client_for(server, api_credentials) as client:
        with pytest.raises(TransportError) as caught:
            await client.search_page(FTS_DOG, 0)
    assert caught.value.kind == "transport_error" and not isinstance(caught.value, BadBody)


async def test_malformed_bodies_are_bad_body(
    start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(malformed_rate=1.0)
    async with client_for(server, api_credentials) as client:
        for _ in range(4):  # both kinds the server makes: truncated JSON and an HTML page
            with pytest.raises(BadBody) as caught:
                await client.search_page(FTS_DOG, 0, request_key="kb")
            assert caught.value.kind == "bad_body" and caught.value.status == 200
            assert "[request kb]" in str(caught.value)


async def test_slow_answer_times_out(
    start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(latency_ms=1000)
    async with client_for(server, api_credentials, timeout_s=0.1) as client:
        with pytest.raises(TransportError) as caught:
            await client.search_page(FTS_DOG, 0)
    assert caught.value.kind == "timeout"


async def test_refused_connection_is_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    async with ExploreClient(f"http://127.0.0.1:{port}", "demo") as client:
        with pytest.raises(TransportError) as caught:
            await client.get_dataset()
    assert caught.value.kind == "transport_error"


class CountingPacer(Pacer):
    def __init__(self) -> None:
        super().__init__(1000)
        self.acquired = 0

    async def acquire(self) -> float:
        self.acquired += 1
        return await super().acquire()


async def test_every_request_and_resend_waits_for_the_pacer(
    start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(token_ttl_s=30)
    pacer = CountingPacer()
    now = [time.time() - 100]
    auth = TokenSource(credentials=api_credentials, clock=lambda: now[0])
    auth.current()
    now[0] = time.time()
    async with client_for(server, api_credentials, auth=auth, pacer=pacer) as client:
        await client.get_dataset()  # 401, renewed, sent again: two requests
        await client.search_page(FTS_DOG, 0)
    assert pacer.acquired == 3


# -- edge cases the local Explore server cannot produce ------------------------------------------
# aioresponses 0.7.9 cannot build responses for aiohttp 3.14 (ClientResponse wants
# `stream_writer`), so these answers come from a scripted aiohttp server on loopback instead.

Answer = tuple[int, bytes, dict[str, str]]


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, list[Answer]]]:
    """A loopback server answering each request with the next scripted (status, body, headers)."""
    answers: list[Answer] = []

    async def answer(request: web.Request) -> web.Response:
        status, raw, headers = answers.pop(0)
        return web.Response(status=status, body=raw, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", answers
    finally:
        await runner.cleanup()


async def test_retry_after_as_http_date(scripted: tuple[str, list[Answer]]) -> None:
    url, answers = scripted
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    answers.append((429, b"{}", {"Retry-After": when}))
    async with ExploreClient(url, "ds") as client:
        with pytest.raises(Throttled) as caught:
            await client.search_page(FTS_DOG, 0)
    assert caught.value.retry_after == pytest.approx(30, abs=2)


async def test_503_with_retry_after_is_throttled_and_429_without_is_too(
    scripted: tuple[str, list[Answer]],
) -> None:
    url, answers = scripted
    answers.append((503, b'{"detail": "busy"}', {"Retry-After": "7"}))
    answers.append((429, b"slow down", {}))
    async with ExploreClient(url, "ds") as client:
        with pytest.raises(Throttled) as first:
            await client.search_page(FTS_DOG, 0)
        with pytest.raises(Throttled) as second:
            await client.search_page(FTS_DOG, 0)
    assert first.value.status == 503 and first.value.retry_after == 7.0
    assert "busy" in str(first.value)
    assert second.value.status == 429 and second.value.retry_after is None


async def test_server_echoing_the_token_is_redacted(scripted: tuple[str, list[Answer]]) -> None:
    url, answers = scripted
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    answers.append((400, orjson.dumps({"detail": f"bad header {token}"}), {}))
    async with ExploreClient(url, "ds", auth=TokenSource(token=token)) as client:
        with pytest.raises(ApiError) as caught:
            await client.search_page(FTS_DOG, 0)
    assert token not in str(caught.value) and token not in str(caught.value.detail)
    assert "[redacted]" in str(caught.value)


async def test_total_pages_and_string_scores_reach_the_page(
    scripted: tuple[str, list[Answer]],
) -> None:
    url, answers = scripted
    cluster = {"cluster_id": "c", "similarity_threshold": "0", "relevance_score": "0.5"}
    answers.append((200, orjson.dumps({"clusters": [cluster], "total_pages": 2}), {}))
    async with ExploreClient(url, "ds") as client:
        page = await client.search_page(FTS_DOG, 1)
    assert page.total_pages == 2 and page.clusters[0].relevance_score == 0.5


@pytest.mark.parametrize(
    "header, expected",
    [
        pytest.param("3", 3.0, id="seconds"),
        pytest.param(" 1.5 ", 1.5, id="fraction"),
        pytest.param("-4", 0.0, id="negative"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param("100000", 100000.0, id="long-kept-for-the-policy-to-cap"),
        pytest.param("soon", None, id="garbage"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


# -- get_json and download: any API path, redirects, the token only to the API's origin ----------

Seen = list[tuple[str, str, str | None]]


@pytest.fixture
async def two_origins() -> AsyncIterator[tuple[str, str, Seen]]:
    """An API and a storage host on loopback (two origins); every request is recorded.

    The API answers `/api/v1/thing` with JSON, `/api/v1/moved` with a redirect to `thing`,
    `/api/v1/text` with a non-JSON body, `/api/v1/busy` with 429 and `/files/...` with a
    redirect to storage; storage serves the bytes of its path.
    """
    seen: Seen = []
    runners: list[web.AppRunner] = []

    async def start(handler: Callable[[web.Request], Any]) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def storage(request: web.Request) -> web.Response:
        seen.append(("storage", request.path, request.headers.get("Authorization")))
        return web.Response(body=request.path.encode() * 1000)

    storage_url = await start(storage)

    async def api(request: web.Request) -> web.Response:
        seen.append(("api", request.path_qs, request.headers.get("Authorization")))
        if request.path == "/api/v1/thing":
            return web.json_response({"ok": True, "x": request.query.get("x")})
        if request.path == "/api/v1/moved":
            raise web.HTTPFound("/api/v1/thing?x=moved")
        if request.path == "/api/v1/text":
            return web.Response(text="<html>hello</html>")
        if request.path == "/api/v1/busy":
            return web.json_response(
                {"detail": "slow down"}, status=429, headers={"Retry-After": "4"}
            )
        if request.path.startswith("/files/"):
            raise web.HTTPFound(f"{storage_url}/bucket{request.path}?signature=abc")
        return web.json_response({"detail": "Not Found"}, status=404)

    api_url = await start(api)
    try:
        yield api_url, storage_url, seen
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_get_json_sends_the_token_and_follows_redirects_at_the_api(
    two_origins: tuple[str, str, Seen],
) -> None:
    api_url, _, seen = two_origins
    async with ExploreClient(api_url, "ds", auth=TokenSource(token="t0k")) as client:
        assert await client.get_json("/thing", {"x": "1"}) == {"ok": True, "x": "1"}
        assert await client.get_json("moved") == {"ok": True, "x": "moved"}
    assert [p for _, p, _ in seen] == [
        "/api/v1/thing?x=1",
        "/api/v1/moved",
        "/api/v1/thing?x=moved",
    ]
    assert {auth for _, _, auth in seen} == {"Bearer t0k"}


async def test_get_json_errors_are_classified_like_the_other_calls(
    two_origins: tuple[str, str, Seen],
) -> None:
    api_url, _, _ = two_origins
    async with ExploreClient(api_url, "ds") as client:
        with pytest.raises(ApiError) as missing:
            await client.get_json("/nowhere", what="export status")
        with pytest.raises(Throttled) as busy:
            await client.get_json("/busy")
        with pytest.raises(BadBody) as bad:
            await client.get_json("/text")
    assert missing.value.status == 404 and str(missing.value).startswith("export status: HTTP 404")
    assert busy.value.status == 429 and busy.value.retry_after == 4.0
    assert bad.value.kind == "bad_body" and "GET /text" in str(bad.value)


async def test_get_json_renews_an_expired_token_once(
    start_server: StartServer, api_credentials: Credentials
) -> None:
    server = start_server(token_ttl_s=30)
    now = [time.time() - 100]
    auth = TokenSource(credentials=api_credentials, clock=lambda: now[0])
    auth.current()
    now[0] = time.time()
    async with client_for(server, api_credentials, auth=auth) as client:
        body = await client.get_json(f"/dataset/{server.dataset_id}")
    assert body["status_new"] == "READY"
    assert auth.current()[0] == 2


async def test_download_streams_to_a_file_and_storage_gets_no_token(
    two_origins: tuple[str, str, Seen], tmp_path: Any
) -> None:
    api_url, storage_url, seen = two_origins
    sink = tmp_path / "export.zip"
    async with ExploreClient(api_url, "ds", auth=TokenSource(token="t0k")) as client:
        await client.download(f"{api_url}/files/t1.zip", sink)
        await client.download(f"{storage_url}/direct.zip", tmp_path / "direct.zip")
    assert sink.read_bytes() == b"/bucket/files/t1.zip" * 1000
    assert (tmp_path / "direct.zip").read_bytes() == b"/direct.zip" * 1000
    assert seen == [
        ("api", "/files/t1.zip", "Bearer t0k"),
        ("storage", "/bucket/files/t1.zip", None),
        ("storage", "/direct.zip", None),
    ]
