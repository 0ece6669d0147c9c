"""Helpers of the server tests: HTTP calls, VQL strings, small datasets built in a second.

Small datasets use `HashEncoder` (deterministic pseudo-random unit vectors), so an import needs no
model; they serve filters, paging and errors, not semantic quality (that is the demo's job).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from runner.server.dataset import import_dataset
from runner.server.lifecycle import ServerThread
from runner.server.query import DatasetInfo

# What the `start_server` fixture gives: call it with ServerConfig overrides.
StartServer = Callable[..., ServerThread]

__all__ = [
    "HashEncoder",
    "Reply",
    "StartServer",
    "all_pages",
    "explore_url",
    "fetch",
    "import_small_dataset",
    "vql",
    "wait_for_export",
]


class HashEncoder:
    """Unit vectors drawn from a hash of each text: same text, same vector; no model needed."""

    dim = 384  # MiniLM's, so that the server's real encoder can query these datasets too

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return (
            np.stack([self.encode_query(t) for t in texts])
            if texts
            else np.zeros((0, self.dim), np.float32)
        )

    def encode_query(self, text: str) -> npt.NDArray[np.float32]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        normalised: npt.NDArray[np.float32] = vector / np.linalg.norm(vector)
        return normalised

    def knows(self, text: str) -> bool:
        return True  # computed at once: as good as cached


def import_small_dataset(
    directory: Path, dataset_id: str, rows: Sequence[Mapping[str, Any]]
) -> DatasetInfo:
    """Import `rows` (media items, see `runner.server.dataset`) into `directory/dataset_id`."""
    src = directory / f"{dataset_id}.jsonl"
    src.write_text("".join(json.dumps(dict(row)) + "\n" for row in rows), encoding="utf-8")
    return import_dataset(src, dataset_id, directory / dataset_id, encoder=HashEncoder())


class Reply:
    """A finished response: status, headers and the body (JSON decoded when it is JSON)."""

    def __init__(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = dict(headers)
        self.raw = raw

    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def detail(self) -> Any:
        return self.json()["detail"]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.raw[:300]!r})"


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """GET `url` and read the whole body."""
    async with session.get(url, params=params, headers=headers) as response:
        return Reply(response.status, response.headers, await response.read())


def explore_url(base_url: str, dataset_id: str) -> str:
    return f"{base_url}/api/v1/explore/{dataset_id}"


def vql(*filters: Mapping[str, Any]) -> str:
    """The `vql` parameter for these filter objects."""
    return json.dumps(list(filters))


async def all_pages(
    session: aiohttp.ClientSession,
    url: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    *,
    max_pages: int = 100,
) -> list[list[dict[str, Any]]]:
    """Every non-empty page of clusters of a search (stops at the first empty page)."""
    pages: list[list[dict[str, Any]]] = []
    for page in range(max_pages):
        reply = await fetch(session, url, {**params, "page_number": str(page)}, headers)
        if reply.status != 200:
            raise AssertionError(f"page {page}: {reply!r}")
        clusters: list[dict[str, Any]] = reply.json()["clusters"]
        if not clusters:
            return pages
        pages.append(clusters)
    raise AssertionError(f"more than {max_pages} pages")


async def wait_for_export(
    session: aiohttp.ClientSession, base: str, task_id: str, headers: Mapping[str, str]
) -> dict[str, Any]:
    """Poll `export_status` (at `base` = .../dataset/{id}) until the job leaves INIT/IN_PROGRESS."""
    for _ in range(500):
        reply = await fetch(session, f"{base}/export_status", {"export_task_id": task_id}, headers)
        if reply.status != 200:
            raise AssertionError(f"export_status: {reply!r}")
        body: dict[str, Any] = reply.json()
        if body["status"] not in ("INIT", "IN_PROGRESS"):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError("the export did not finish in 10 s")
