"""The scheduler: pagination, fan-out of shared requests, resume, stop, shards, backoff."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from helpers_exec import DEMO_ENV, hit_rows, new_writer, request_rows, run_sync, write_suite

from runner.api.auth import Credentials
from runner.api.client import ExploreClient, TokenSource
from runner.errors import RunError, UsageError
from runner.execute import (
    ExecuteOptions,
    RetryPolicy,
    RunControl,
    RunInterrupted,
    RunResult,
    RunStats,
    _types,
    make_pacer,
    run_plan,
    run_suite,
    suite_client,
)
from runner.execute._rows import Recorder
from runner.plan import expand
from runner.server.lifecycle import ServerThread
from runner.store import RunCounts, RunWriter, read_manifest, scan_hits
from runner.suite import load_suite

StartServer = Callable[..., ServerThread]


# -- a scripted API for pagination --------------------------------------------------------------


class Catalogue:
    """What the scripted API holds: `clusters` matches in all (None: without end)."""

    def __init__(self) -> None:
        self.clusters: int | None = 0
        self.total_pages: int | None = None
        self.pages_asked: list[int] = []


@pytest.fixture
async def paging_api() -> AsyncIterator[tuple[str, Catalogue]]:
    catalogue = Catalogue()

    async def explore(request: web.Request) -> web.Response:
        page = int(request.query["page_number"])
        catalogue.pages_asked.append(page)
        total = catalogue.clusters
        start = page * 100
        end = start + 100 if total is None else min(start + 100, total)
        clusters = [
            {
                "cluster_id": f"c{i}",
                "n_images": 2,
                "similarity_threshold": "0",
                "relevance_score": 100.0 - i / 10,
                "relevance_score_type": "bm25",
                "previews": [
                    {"media_id": f"m{i}-{j}", "relevance_score": 100.0 - i / 10 - j}
                    for j in range(2)
                ],
                "labels": None,
            }
            for i in range(start, max(start, end))
        ]
        body: dict[str, Any] = {"clusters": clusters}
        if catalogue.total_pages is not None:
            body["total_pages"] = catalogue.total_pages
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def dataset(request: web.Request) -> web.Response:
        return web.json_response({"id": "ds", "status_new": "READY", "n_images": 1})

    app = web.Application()
    app.router.add_get("/api/v1/explore/ds", explore)
    app.router.add_get("/api/v1/dataset/ds", dataset)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", catalogue
    finally:
        await runner.cleanup()


async def run_one_query(
    tmp_path: Path, url: str, max_pages: int | str, **options: Any
) -> RunResult:
    suite = load_suite(
        write_suite(
            tmp_path,
            None,
            base_url=url,
            dataset_id="ds",
            queries=[{"id": "q", "text": "anything"}],
            pagination={"max_pages": max_pages},
        )
    )
    plan = expand(suite)
    writer = new_writer(tmp_path, suite, plan, url)
    pages = None if max_pages == "all" else int(max_pages)
    async with ExploreClient(url, "ds") as client:
        return await run_plan(
            plan, writer, client=client, options=ExecuteOptions(max_pages=pages, **options)
        )


@pytest.mark.parametrize(
    "clusters, total_pages, max_pages, pages",
    [
        pytest.param(250, None, "all", [0, 1, 2], id="short-page-ends"),
        pytest.param(200, None, "all", [0, 1, 2], id="empty-page-ends"),
        pytest.param(0, None, "all", [0], id="nothing-found"),
        pytest.param(1000, 2, "all", [0, 1], id="total-pages-ends"),
        pytest.param(1000, None, 3, [0, 1, 2], id="max-pages-ends"),
    ],
)
async def test_pagination_ends(
    paging_api: tuple[str, Catalogue],
    tmp_path: Path,
    clusters: int,
    total_pages: int | None,
    max_pages: int | str,
    pages: list[int],
) -> None:
    url, catalogue = paging_api
    catalogue.clusters, catalogue.total_pages = clusters, total_pages
    result = await run_one_query(tmp_path, url, max_pages)
    assert result.status == "complete" and result.exit_code == 0
    assert catalogue.pages_asked == pages
    requests = request_rows(result.run_dir)
    assert requests["page"].to_list() == pages
    served = min(clusters, 100 * len(pages))
    assert requests["clusters"].sum() == served
    hits = scan_hits(result.run_dir).collect().sort("rank")
    # ranks run on across pages: clusters 1..n, hits 1..2n, two previews per cluster
    assert hits["rank"].to_list() == list(range(1, 2 * served + 1))
    assert hits["cluster_rank"].to_list() == [1 + i // 2 for i in range(2 * served)]
    assert hits["preview_rank"].to_list() == [1 + i % 2 for i in range(2 * served)]
    assert hits["score"].to_list() == hits["raw_score"].to_list()  # bm25: higher is better


async def test_all_pages_stops_at_the_hard_cap(
    paging_api: tuple[str, Catalogue], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, catalogue = paging_api
    catalogue.clusters = None  # an API that never says it is done
    monkeypatch.setattr(_types, "PAGE_CAP", 4)
    result = await run_one_query(tmp_path, url, "all")
    assert catalogue.pages_asked == [0, 1, 2, 3]
    assert result.status == "complete"


# -- shared requests, resume, stop, shards (against the demo server) -----------------------------


@pytest.fixture(scope="module")
def clean_run(demo_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    folder = tmp_path_factory.mktemp("clean")
    result = run_sync(write_suite(folder, demo_server, pagination={"max_pages": 2}), folder / "r")
    assert result.status == "complete" and result.exit_code == 0
    return result


def test_identical_requests_are_sent_once_and_fanned_out(
    clean_run: RunResult,
) -> None:
    hits = scan_hits(clean_run.run_dir).collect()
    first = hits.filter(hits["query_id"] == "dog-beach").sort("rank")
    again = hits.filter(hits["query_id"] == "dog-beach-again").sort("rank")
    assert first.height > 0
    same = ["media_id", "rank", "cluster_id", "raw_score", "page"]
    assert first.select(same).equals(again.select(same))
    assert set(first["request_key"]) != set(again["request_key"])
    # one wire request for the two: pages sent = pages of the unique requests
    requests = request_rows(clean_run.run_dir)
    unique_pages = requests.filter(requests["query_id"] != "dog-beach-again").height
    assert clean_run.stats.sent == unique_pages == clean_run.stats.pages
    shared = requests.filter(requests["query_id"].is_in(["dog-beach", "dog-beach-again"]))
    assert shared["sent_at"].n_unique() == shared.height // 2


def test_resume_after_max_requests_ends_with_the_same_rows(
    clean_run: RunResult, demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, demo_server, pagination={"max_pages": 2})
    first = run_sync(suite, tmp_path / "r", max_requests=3)
    assert first.status == "partial" and first.exit_code == 0
    assert first.stats.done == 3
    assert read_manifest(first.run_dir)["status"] == "partial"
    second = run_sync(suite, tmp_path / "r", resume=True)
    assert second.run_dir == first.run_dir
    assert second.status == "complete" and second.exit_code == 0
    assert second.stats.skipped == 3
    assert second.stats.done == clean_run.stats.done - 3
    assert first.stats.sent + second.stats.sent == clean_run.stats.sent  # nothing sent twice
    assert hit_rows(second.run_dir) == hit_rows(clean_run.run_dir)


class StopAfter:
    """A progress sink that stops the run once `n` requests are done."""

    def __init__(self, control: RunControl, n: int) -> None:
        self.control, self.n = control, n

    def update(self, stats: RunStats) -> None:
        if stats.done >= self.n:
            self.control.stop()


def test_stop_leaves_a_partial_run_that_resumes_to_the_same_rows(
    clean_run: RunResult, demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, demo_server, pagination={"max_pages": 2}, concurrency=2)
    control = RunControl()
    first = run_sync(suite, tmp_path / "r", control=control, progress=StopAfter(control, 2))
    assert first.status == "partial" and first.interrupted and first.exit_code == 130
    assert 2 <= first.stats.done < clean_run.stats.done
    assert len(hit_rows(first.run_dir)) > 0  # what was recorded is readable Parquet
    second = run_sync(suite, tmp_path / "r", resume=first.run_dir)
    assert second.status == "complete"
    assert hit_rows(second.run_dir) == hit_rows(clean_run.run_dir)


async def test_abort_cancels_requests_in_flight(
    start_server: StartServer, api_credentials: Credentials, tmp_path: Path
) -> None:
    server = start_server(latency_ms=30_000)  # answers that would outlast any slow machine
    suite = load_suite(write_suite(tmp_path, server))
    plan = expand(suite)
    writer = new_writer(tmp_path, suite, plan, server.base_url)
    control = RunControl()
    auth = TokenSource(credentials=api_credentials)
    started = time.monotonic()
    async with ExploreClient(server.base_url, server.dataset_id, auth=auth) as client:
        options = ExecuteOptions(concurrency=4)
        task = asyncio.create_task(
            run_plan(plan, writer, client=client, control=control, options=options)
        )
        await asyncio.sleep(0.3)  # four requests are now waiting on the slow server
        control.stop()
        control.stop()  # the second Ctrl-C aborts
        result = await task
    assert time.monotonic() - started < 15  # not waiting for the 30 s answers (a hang, not speed)
    assert result.status == "partial" and result.interrupted
    assert result.counts.requests_done == 0 and result.stats.sent == 4
    assert read_manifest(result.run_dir)["status"] == "partial"


def test_shards_cover_the_plan_once(
    clean_run: RunResult, demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, demo_server, pagination={"max_pages": 2})
    parts = [run_sync(suite, tmp_path / "r", shard_of=(k, 2)) for k in (1, 2)]
    assert [read_manifest(p.run_dir)["shard"] for p in parts] == ["1/2", "2/2"]
    rows = sorted(row for part in parts for row in hit_rows(part.run_dir))
    assert rows == sorted(hit_rows(clean_run.run_dir))
    assert all(part.stats.done > 0 for part in parts)


def test_resume_refuses_another_shard(demo_server: ServerThread, tmp_path: Path) -> None:
    suite = write_suite(tmp_path, demo_server)
    first = run_sync(suite, tmp_path / "r", shard_of=(1, 2), max_requests=1)
    with pytest.raises(UsageError, match="shard 1/2"):
        run_sync(suite, tmp_path / "r", resume=first.run_dir, shard_of=(2, 2))


# -- pure parts ---------------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_a_growing_ceiling() -> None:
    policy = RetryPolicy(max_attempts=9, backoff_s=0.5, max_backoff_s=3.0)
    rng = random.Random(5)
    for attempt in range(1, 9):
        ceiling = min(3.0, 0.5 * 2 ** (attempt - 1))
        waits = [policy.backoff(attempt, rng) for _ in range(200)]
        assert 0 <= min(waits) and max(waits) <= ceiling
        assert max(waits) > 0.8 * ceiling  # spread over the whole range, not bunched


@pytest.mark.parametrize(
    "status, failed, interrupted, code",
    [
        pytest.param("complete", 0, False, 0, id="complete"),
        pytest.param("complete", 2, False, 1, id="some-failed"),
        pytest.param("failed", 0, False, 1, id="run-failed"),
        pytest.param("partial", 0, True, 130, id="interrupted"),
        pytest.param("partial", 0, False, 0, id="max-requests"),
    ],
)
def test_exit_codes(status: str, failed: int, interrupted: bool, code: int) -> None:
    result = RunResult(
        run_dir=Path("x"),
        status=status,
        counts=RunCounts(requests_planned=5, requests_failed=failed),
        stats=RunStats(),
        interrupted=interrupted,
    )
    assert result.exit_code == code


def test_shard_takes_its_share_of_the_rate_limit() -> None:
    whole, part = make_pacer(10.0), make_pacer(10.0, (2, 4))
    assert whole is not None and whole.rate == 10.0
    assert part is not None and part.rate == pytest.approx(10.0 / 4)
    assert make_pacer(float("inf")) is None


async def test_stop_before_the_first_search_writes_nothing(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(latency_ms=30_000)  # the preflight is slow to answer
    suite = load_suite(write_suite(tmp_path, server))
    control = RunControl()
    asyncio.get_running_loop().call_later(0.2, control.stop)
    started = time.monotonic()
    with pytest.raises(RunInterrupted) as caught:
        await run_suite(suite, out=tmp_path / "r", control=control, environ=DEMO_ENV)
    assert caught.value.exit_code == 130
    assert time.monotonic() - started < 15  # not waiting for the answer (a hang, not speed)
    assert not (tmp_path / "r").exists()


def test_embedded_server_serves_only_the_demo(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, None, dataset_id="cars")
    with pytest.raises(UsageError, match="only the demo dataset"):
        run_sync(suite, tmp_path / "r")
    assert not (tmp_path / "r").exists()


# -- suite_client: the suite's API, or the embedded server ----------------------------------------


async def test_suite_client_without_base_url_runs_the_embedded_server(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, None, rate_limit=50, timeout_s=7))
    async with suite_client(suite, environ={}) as client:
        dataset = await client.get_dataset()
        base_url = client.base_url
        assert client.auth.kind == "credentials"  # the demo credentials, not the environment
        assert client.pacer is not None and client.pacer.rate == 50
    assert dataset.status == "READY" and client.dataset_id == dataset.dataset_id
    with pytest.raises(aiohttp.ClientError):  # stopped on exit
        async with aiohttp.ClientSession() as session, session.get(base_url) as response:
            await response.read()


async def test_suite_client_uses_the_base_url_and_the_suite_s_auth_variables(
    demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = load_suite(
        write_suite(tmp_path, demo_server, auth={"token_env": "MY_TOKEN"}, rate_limit="unlimited")
    )
    async with suite_client(suite, environ={"MY_TOKEN": "token-abc"}, shard_of=(1, 2)) as client:
        assert (client.base_url, client.dataset_id) == (
            demo_server.base_url,
            demo_server.dataset_id,
        )
        assert client.auth.kind == "token" and client.pacer is None
    sharded = load_suite(write_suite(tmp_path, demo_server, rate_limit=10))
    async with suite_client(sharded, environ=DEMO_ENV, shard_of=(1, 2)) as client:
        assert client.pacer is not None and client.pacer.rate == 5
        assert (await client.get_dataset()).status == "READY"


async def test_suite_client_embedded_serves_only_the_demo(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, None, dataset_id="cars"))
    with pytest.raises(UsageError, match="only the demo dataset"):
        async with suite_client(suite, environ={}):
            pass


class FailingStore:
    """A run writer whose `record` fails from the `fail_at`-th call on (a full disk, say)."""

    def __init__(self, writer: RunWriter, fail_at: int) -> None:
        self.writer, self.fail_at, self.calls = writer, fail_at, 0
        self.finished: list[str] = []

    @property
    def run_dir(self) -> Path:
        return self.writer.run_dir

    @property
    def counts(self) -> RunCounts:
        return self.writer.counts

    def completed_keys(self) -> set[str]:
        return self.writer.completed_keys()

    def record(self, request_rows: Any, hit_rows: Any) -> None:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RunError(f"{self.run_dir}: cannot append to the journal: No space left on device")
        self.writer.record(request_rows, hit_rows)

    def finish(self, status: str) -> object:
        self.finished.append(status)
        return self.writer.finish(status)


async def test_a_store_error_in_the_recording_thread_fails_the_run(
    demo_server: ServerThread,
    api_credentials: Credentials,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows are recorded in a worker thread: its error still ends the run `failed`, raised."""
    monkeypatch.setattr(Recorder, "ready", lambda self: True)  # a flush in a thread every unit
    suite = load_suite(write_suite(tmp_path, demo_server, pagination={"max_pages": 1}))
    plan = expand(suite)
    store = FailingStore(new_writer(tmp_path, suite, plan, demo_server.base_url), fail_at=2)
    auth = TokenSource(credentials=api_credentials)
    async with ExploreClient(demo_server.base_url, demo_server.dataset_id, auth=auth) as client:
        options = ExecuteOptions(concurrency=4)
        with pytest.raises(RunError, match="No space left on device"):
            await run_plan(plan, store, client=client, options=options)
    assert store.finished == ["failed"]
    assert read_manifest(store.run_dir)["status"] == "failed"
