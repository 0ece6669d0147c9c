"""Shared fixtures: the demo dataset and the local Explore server on a free loopback port.

def test_x(demo_server, auth_headers): ...          # one server for the whole session
def test_y(start_server): server = start_server(fail_rate=1.0)   # own server, stopped after
def test_z(replay): replay.answer("dataset", Canned(...))  # the hosted API's documented bodies
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_replay import ReplayServer
from helpers_server import StartServer

from runner.api.auth import DEMO_CREDENTIALS, Credentials, bearer_header, mint_token
from runner.server.config import ServerConfig
from runner.server.lifecycle import ServerThread


@pytest.fixture(scope="session")
def demo_dataset_dir() -> Path:
    """The demo dataset directory (built once into the cache)."""
    from runner.server.demo import demo_dataset_dir as build

    return build()


@pytest.fixture(scope="session")
def api_credentials() -> Credentials:
    """The credentials the test servers accept (the demo pair, whatever the environment says)."""
    return DEMO_CREDENTIALS


@pytest.fixture
def auth_headers(api_credentials: Credentials) -> dict[str, str]:
    """A ready `Authorization: Bearer <fresh token>` header."""
    return bearer_header(mint_token(api_credentials, ttl_s=600))


@pytest.fixture(scope="session")
def demo_server(demo_dataset_dir: Path, api_credentials: Credentials) -> Iterator[ServerThread]:
    """One server over the demo dataset for the session: auth on, no faults."""
    config = ServerConfig(dataset_dir=demo_dataset_dir, credentials=api_credentials)
    with ServerThread(config) as server:
        yield server


@pytest.fixture
def start_server(demo_dataset_dir: Path, api_credentials: Credentials) -> Iterator[StartServer]:
    """A factory: `start_server(**ServerConfig overrides)` starts a server, stopped at test end.

    Defaults: the demo dataset, auth on with `api_credentials`, a free port, no faults.
    """
    started: list[ServerThread] = []

    def start(**overrides: Any) -> ServerThread:
        fields: dict[str, Any] = {"dataset_dir": demo_dataset_dir, "credentials": api_credentials}
        fields.update(overrides)
        server = ServerThread(ServerConfig(**fields))
        server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def replay() -> Iterator[ReplayServer]:
    """A replay server of the hosted API's documented bodies on 127.0.0.1, stopped at test end."""
    with ReplayServer() as server:
        yield server
