"""Runs against a faulty local server end with exactly the rows of a fault-free run.

Each fault switch of the server (429 + Retry-After, 5xx, dropped connections, malformed bodies,
slow answers, expiring tokens) is turned on in turn; the run must retry its way to the same hits
(nothing lost, nothing duplicated) and record the attempts it took. Errors that must not be
retried (4xx) are recorded and give exit code 1; a dataset that cannot serve the suite is refused
before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers_exec import QUERIES, hit_rows, new_writer, request_rows, run_sync, write_suite
from helpers_server import import_small_dataset

from runner.api.auth import Credentials, mint_token
from runner.api.client import ExploreClient, TokenSource
from runner.api.pacer import Pacer
from runner.errors import ApiError, TransportError
from runner.execute import ExecuteOptions, RetryPolicy, run_plan
from runner.plan import expand
from runner.server.lifecycle import ServerThread
from runner.store import read_manifest
from runner.suite import load_suite

StartServer = Callable[..., ServerThread]
Rows = list[tuple[Any, ...]]


@pytest.fixture(scope="module")
def clean_rows(demo_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Rows:
    """The hit rows of the test suite run against a fault-free server."""
    folder = tmp_path_factory.mktemp("clean")
    result = run_sync(write_suite(folder, demo_server), folder / "reports")
    assert result.status == "complete" and result.exit_code == 0
    rows = hit_rows(result.run_dir)
    assert len(rows) > 100  # enough hits, over several pages, for the comparison to mean much
    assert request_rows(result.run_dir)["page"].max() == 2  # some requests reached page 3
    return rows


def nothing_under(folder: Path) -> bool:
    return not folder.exists() or not any(folder.rglob("*"))


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"fail_rate": 0.3}, id="5xx"),
        pytest.param({"drop_rate": 0.3}, id="dropped-connections"),
        pytest.param({"malformed_rate": 0.3}, id="malformed-bodies"),
        pytest.param({"latency_ms": 50}, id="slow-answers"),
    ],
)
def test_faulty_server_gives_the_same_rows(
    fault: dict[str, Any], clean_rows: Rows, start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(seed=11, **fault)
    result = run_sync(write_suite(tmp_path, server), tmp_path / "reports")
    assert result.status == "complete" and result.exit_code == 0
    assert hit_rows(result.run_dir) == clean_rows
    requests = request_rows(result.run_dir)
    assert (requests["outcome"] == "ok").all()
    if "latency_ms" in fault:
        assert requests["latency_ms"].min() >= fault["latency_ms"]
    else:
        # the faults cost retries, and the rows say so
        assert (requests["attempts"] > 1).any()
        assert result.stats.retries > 0
        assert result.stats.sent > result.stats.pages  # pages fetched, each once


def test_rate_limited_server_slows_the_whole_run(
    clean_rows: Rows, start_server: StartServer, tmp_path: Path
) -> None:
    """The server allows 10/s and answers 429 + Retry-After; the suite asks for 2000/s.

    Only three attempts a request: if each worker merely backed off for its few milliseconds,
    requests would exhaust them inside one second; obeying Retry-After for the whole run, every
    retry lands after the server's bucket refilled (Retry-After is obeyed up to 5 s here, not
    cut to the 0.01 s of max_backoff_s, its default cap).
    """
    server = start_server(rate_limit=10)
    retries = {"max_attempts": 3, "backoff_s": 0.005, "max_backoff_s": 0.01, "max_retry_after_s": 5}
    suite = write_suite(tmp_path, server, retries=retries)
    started = time.monotonic()
    result = run_sync(suite, tmp_path / "reports")
    elapsed = time.monotonic() - started
    assert result.status == "complete" and result.exit_code == 0
    assert hit_rows(result.run_dir) == clean_rows
    requests = request_rows(result.run_dir)
    assert (requests["attempts"] > 1).any()  # some pages were refused before they were served
    pages = requests.select("request_key", "page").n_unique()
    # a bucket of 10 then 10/s: the run cannot be faster than that, Retry-After or not
    assert elapsed >= (pages - 10) / 10 * 0.9


def test_expiring_tokens_are_minted_again(
    clean_rows: Rows, start_server: StartServer, tmp_path: Path
) -> None:
    """Tokens live 1.2 s on this server; a run of more than twice that needs fresh ones.

    (A token's `iat` is in whole seconds, so a fresh token may be nearly a second old already.)
    """
    ttl = 1.2
    server = start_server(token_ttl_s=ttl)
    suite = write_suite(tmp_path, server, rate_limit=12)
    started = time.monotonic()
    result = run_sync(suite, tmp_path / "reports")
    assert time.monotonic() - started > 2 * ttl
    assert result.status == "complete" and result.exit_code == 0
    assert hit_rows(result.run_dir) == clean_rows


def test_expired_ready_token_fails_the_run(
    start_server: StartServer, api_credentials: Credentials, tmp_path: Path
) -> None:
    """A ready token cannot be renewed: the run stops, `failed`, and can be resumed later."""
    server = start_server(token_ttl_s=30)
    stale = mint_token(api_credentials, now=time.time() - 60)
    suite = write_suite(tmp_path, server)
    with pytest.raises(ApiError) as caught:  # refused at the preflight already
        run_sync(suite, tmp_path / "reports", environ={"VL_TOKEN": stale})
    assert caught.value.status == 401 and stale not in str(caught.value)
    assert nothing_under(tmp_path / "reports")


async def test_token_refused_mid_run_stops_it_failed(
    start_server: StartServer, api_credentials: Credentials, tmp_path: Path
) -> None:
    server = start_server(token_ttl_s=0.3)
    token = mint_token(api_credentials)
    suite = load_suite(write_suite(tmp_path, server, rate_limit=20))
    plan = expand(suite)
    writer = new_writer(tmp_path, suite, plan, server.base_url)
    auth = TokenSource(token=token)
    pacer = Pacer(20)  # about a second for the plan: the token expires on the way
    async with ExploreClient(server.base_url, server.dataset_id, auth=auth, pacer=pacer) as client:
        result = await run_plan(plan, writer, client=client, options=ExecuteOptions())
    assert result.status == "failed" and result.exit_code == 1
    assert result.message is not None and "401" in result.message
    assert token not in result.message
    assert read_manifest(result.run_dir)["status"] == "failed"


async def test_timeouts_are_retried_then_recorded(
    start_server: StartServer, api_credentials: Credentials, tmp_path: Path
) -> None:
    """An API slower than the timeout: each page is tried max_attempts times, then recorded."""
    server = start_server(latency_ms=300)
    suite = load_suite(write_suite(tmp_path, server, queries=QUERIES[:2]))
    plan = expand(suite)
    writer = new_writer(tmp_path, suite, plan, server.base_url)
    auth = TokenSource(credentials=api_credentials)
    options = ExecuteOptions(retry=RetryPolicy(max_attempts=2, backoff_s=0.01, max_backoff_s=0.01))
    async with ExploreClient(
        server.base_url, server.dataset_id, auth=auth, timeout_s=0.1
    ) as client:
        result = await run_plan(plan, writer, client=client, options=options)
    requests = request_rows(result.run_dir)
    assert result.status == "complete" and result.exit_code == 1
    assert result.counts.requests_failed == len(plan)
    assert requests["outcome"].to_list() == ["timeout"] * len(plan)
    assert requests["attempts"].to_list() == [2] * len(plan)
    assert requests["http_status"].null_count() == len(plan)


def test_client_errors_are_recorded_not_retried(demo_server: ServerThread, tmp_path: Path) -> None:
    """A query the API refuses (422: text over 2,048 characters) fails alone, at once."""
    long_query = {"id": "too-long", "text": "dog " * 600}
    suite = write_suite(tmp_path, demo_server, queries=[QUERIES[2], long_query])
    result = run_sync(suite, tmp_path / "reports")
    assert result.status == "complete" and result.exit_code == 1
    assert result.counts.requests_failed == 1
    requests = request_rows(result.run_dir)
    bad = requests.filter(requests["query_id"] == "too-long").row(0, named=True)
    assert bad["outcome"] == "http_error" and bad["http_status"] == 422
    assert bad["attempts"] == 1 and "422" in bad["error"]
    good = requests.filter(requests["query_id"] == "red-bicycle")
    assert (good["outcome"] == "ok").all()


def test_dataset_not_ready_is_refused_before_anything(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(dataset_status="INDEXING")
    with pytest.raises(ApiError, match="INDEXING: searching needs READY") as caught:
        run_sync(write_suite(tmp_path, server), tmp_path / "reports")
    assert caught.value.status == 409
    assert nothing_under(tmp_path / "reports")


def test_label_filter_on_a_dataset_without_tagging_is_refused(
    start_server: StartServer, tmp_path: Path
) -> None:
    rows = [
        {"file_name": f"img{i}.jpg", "caption": f"a dog number {i} on the beach"} for i in range(5)
    ]
    import_small_dataset(tmp_path, "untagged", rows)
    server = start_server(dataset_dir=tmp_path / "untagged")
    queries = [{"id": "dogs", "text": "dog", "labels": ["dog"]}]
    suite = write_suite(tmp_path, server, queries=queries, modes=["fts", "semantic"])
    with pytest.raises(ApiError) as caught:
        run_sync(suite, tmp_path / "reports")
    assert "label filters needs IMAGE_TAGGING" in str(caught.value)
    assert nothing_under(tmp_path / "reports")


def test_unreachable_api_is_refused_before_anything(tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path,
        None,
        base_url="http://127.0.0.1:9",
        dataset_id="demo",
        retries={"max_attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.01},
    )
    with pytest.raises(TransportError):
        run_sync(suite, tmp_path / "reports")
    assert nothing_under(tmp_path / "reports")
