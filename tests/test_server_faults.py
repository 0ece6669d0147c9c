"""Fault injection: each switch over real HTTP, seeded reproducibility, 429 with Retry-After."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from helpers_server import Reply, StartServer, explore_url, fetch

from runner.server.faults import FAIL_STATUSES, Decision, FaultConfig, FaultInjector
from runner.server.lifecycle import ServerThread


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _dataset_url(server: ServerThread) -> str:
    return f"{server.base_url}/api/v1/dataset/{server.dataset_id}"


async def _statuses(
    session: aiohttp.ClientSession, server: ServerThread, headers: dict[str, str], n: int
) -> list[int]:
    return [(await fetch(session, _dataset_url(server), headers=headers)).status for _ in range(n)]


async def test_faults_are_off_by_default(
    session: aiohttp.ClientSession, demo_server: ServerThread, auth_headers: dict[str, str]
) -> None:
    assert await _statuses(session, demo_server, auth_headers, 30) == [200] * 30


async def test_fail_rate_one_fails_every_api_call_but_not_healthcheck(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(fail_rate=1.0, seed=3)
    for _ in range(12):
        reply = await fetch(session, _dataset_url(server), headers=auth_headers)
        assert reply.status in FAIL_STATUSES and reply.detail
    health = await fetch(session, f"{server.base_url}/api/v1/healthcheck")
    assert health.status == 200


async def test_fail_rate_is_seeded(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    runs = []
    for seed in (11, 11, 12):
        server = start_server(fail_rate=0.5, seed=seed)
        runs.append(await _statuses(session, server, auth_headers, 40))
        server.stop()
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    failed = sum(status != 200 for status in runs[0])
    assert 0 < failed < 40  # about half, never none or all with these seeds
    assert {status for status in runs[0] if status != 200} <= set(FAIL_STATUSES)


async def test_drop_rate_cuts_the_body(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(drop_rate=1.0)
    url = explore_url(server.base_url, server.dataset_id)
    for _ in range(3):
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            await fetch(session, url, {"entity_type": "IMAGES"}, auth_headers)
    assert (await fetch(session, f"{server.base_url}/api/v1/healthcheck")).status == 200


def _documented(reply: Reply) -> bool:
    try:
        body = reply.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(body, dict) and "id" in body


async def test_malformed_rate_gives_bodies_that_are_not_the_json(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(malformed_rate=1.0, seed=5)
    replies = [await fetch(session, _dataset_url(server), headers=auth_headers) for _ in range(12)]
    assert all(r.status == 200 and not _documented(r) for r in replies)
    kinds = {r.headers["Content-Type"].split(";")[0] for r in replies}
    assert kinds == {"application/json", "text/html"}  # truncated JSON and an HTML page


async def test_rate_limit_answers_429_with_retry_after(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(rate_limit=5)
    replies = [await fetch(session, _dataset_url(server), headers=auth_headers) for _ in range(20)]
    limited = [r for r in replies if r.status == 429]
    # A bucket of one second's worth: about 5 pass in a burst, the rest are limited.
    assert 5 <= sum(r.status == 200 for r in replies) < 20 and limited
    for reply in limited:
        assert int(reply.headers["Retry-After"]) >= 1 and "5" in reply.detail
    await asyncio.sleep(0.25)  # the bucket refills at 5/s: one token after 0.2 s
    assert (await fetch(session, _dataset_url(server), headers=auth_headers)).status == 200


async def test_latency_delays_api_calls(
    session: aiohttp.ClientSession, start_server: StartServer, auth_headers: dict[str, str]
) -> None:
    server = start_server(latency_ms=150)
    started = time.perf_counter()
    assert (await fetch(session, _dataset_url(server), headers=auth_headers)).status == 200
    assert time.perf_counter() - started >= 0.15


# --- the injector itself (no sleeping: the clock is injected) ---------------------------------


def test_bucket_refills_at_the_rate() -> None:
    now = [0.0]
    injector = FaultInjector(FaultConfig(rate_limit=4), clock=lambda: now[0])
    assert [injector.admit() for _ in range(4)] == [None] * 4
    wait = injector.admit()
    assert wait == pytest.approx(1 / 4)  # one token comes back after 1/rate seconds
    now[0] += 0.25
    assert injector.admit() is None


def test_decisions_are_reproducible_and_follow_the_rates() -> None:
    config = FaultConfig(fail_rate=0.2, drop_rate=0.2, malformed_rate=0.2, seed=9)
    first = [FaultInjector(config).decide() for _ in range(1)]
    a, b = FaultInjector(config), FaultInjector(config)
    draws_a = [a.decide() for _ in range(2000)]
    assert draws_a == [b.decide() for _ in range(2000)]
    assert first[0] == draws_a[0]
    failed = sum(d.fail_status is not None for d in draws_a) / 2000
    assert failed == pytest.approx(0.2, abs=0.04)
    assert any(d.drop for d in draws_a) and any(d.malformed for d in draws_a)


def test_off_means_no_faults() -> None:
    injector = FaultInjector(FaultConfig())
    assert not injector.config.enabled
    assert all(injector.decide() == Decision() for _ in range(100))
    assert injector.admit() is None


@pytest.mark.parametrize(
    "field, value",
    [("fail_rate", 1.5), ("drop_rate", -0.1), ("latency_ms", -1.0), ("rate_limit", 0.0)],
)
def test_bad_switches_are_refused(field: str, value: float) -> None:
    switch: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=field):
        FaultConfig(**switch)
