"""How fast does the local Explore server answer? fts, semantic and caption at concurrency 16.

The server runs as a subprocess (`vlbench serve` on a free port, auth on, the demo dataset), so
that client and server do not share a GIL; the client is one aiohttp session with 16 workers.
Each workload runs for a few seconds with distinct COCO captions as queries (the images' other
human captions, so neither the query-embedding cache nor the result cache can answer them), page 0.
The peer measured in the same run is the healthcheck: the same HTTP path, auth and JSON with no
search, so `x healthcheck` says what share of the capacity search itself costs.

Printed per workload: requests, errors, requests/s, p50 and p99 latency, and requests/s as a
ratio of the healthcheck's.

Run: .venv/bin/python bench/bench_server.py [--seconds 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import aiohttp

from runner.api.auth import DEMO_CREDENTIALS, ENV_API_KEY, ENV_API_SECRET, bearer_header, mint_token
from runner.server.demo import demo_dataset_dir, demo_images
from runner.server.lifecycle import serve_process

Params = Callable[[int], dict[str, str]]
_GRACE_S = 2.0
_WIDTHS = (8, 6, 8, 8, 8, 14)


@dataclass(frozen=True, slots=True)
class Figures:
    """What one workload achieved."""

    name: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


@contextmanager
def served(vlbench: str, dataset: Path) -> Iterator[tuple[str, str]]:
    """`vlbench serve` on a free port: (base URL, dataset id); stopped on exit."""
    env = {**os.environ, ENV_API_KEY: "", ENV_API_SECRET: ""}  # the demo key pair
    with serve_process(["--dataset", str(dataset)], command=[vlbench], env=env) as server:
        yield server.base_url, server.dataset_id


async def drive(
    session: aiohttp.ClientSession, url: str, params: Params, seconds: float, concurrency: int
) -> tuple[list[float], int]:
    """Send requests from `concurrency` workers for `seconds`: (latencies in s, errors)."""
    latencies: list[float] = []
    errors = 0
    numbers = count()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            query = params(next(numbers))
            started = time.perf_counter()
            async with session.get(url, params=query) as response:
                await response.read()
                ok = response.status == 200
            latencies.append(time.perf_counter() - started)
            errors += not ok

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    # Requests still running long after the deadline are cut off (and not counted), so that a
    # slow machine cannot stretch the benchmark past its budget.
    _, late = await asyncio.wait(workers, timeout=seconds + _GRACE_S)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    return latencies, errors


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


async def bench(base_url: str, dataset_id: str, seconds: float, concurrency: int) -> list[Figures]:
    queries = [c for image in demo_images() for c in image.captions[1:]]

    def fts(i: int) -> dict[str, str]:
        text = queries[i % len(queries)]
        return {
            "entity_type": "IMAGES",
            "vql": json.dumps([{"text": {"op": "fts", "value": text}}]),
        }

    def semantic(i: int) -> dict[str, str]:
        text = queries[(i + len(queries) // 3) % len(queries)]
        vql = [{"text": {"op": "semantic", "value": text, "threshold": 0.7}}]
        return {"entity_type": "IMAGES", "vql": json.dumps(vql)}

    def caption(i: int) -> dict[str, str]:
        text = queries[(i + 2 * len(queries) // 3) % len(queries)]
        return {"entity_type": "IMAGES", "caption": text, "textual_similarity_threshold": "0.7"}

    explore = f"{base_url}/api/v1/explore/{dataset_id}"
    workloads: list[tuple[str, str, Params]] = [
        ("healthcheck", f"{base_url}/api/v1/healthcheck", lambda i: {}),
        ("fts", explore, fts),
        ("semantic", explore, semantic),
        ("caption", explore, caption),
    ]
    headers = bearer_header(mint_token(DEMO_CREDENTIALS, ttl_s=600))
    connector = aiohttp.TCPConnector(limit=concurrency)
    figures = []
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        await drive(session, explore, semantic, 0.5, 2)  # warm up: the encoder loads lazily
        for name, url, params in workloads:
            started = time.perf_counter()
            latencies, errors = await drive(session, url, params, seconds, concurrency)
            elapsed = time.perf_counter() - started
            # Searches cut off at the deadline still run in the server's index threads (FIFO):
            # one more search through the same queue returns once they are done.
            async with session.get(explore, params={"entity_type": "IMAGES"}) as drained:
                await drained.read()
            figures.append(
                Figures(
                    name,
                    len(latencies),
                    errors,
                    elapsed,
                    _quantile(latencies, 0.50) * 1000,
                    _quantile(latencies, 0.99) * 1000,
                )
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per workload")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--vlbench",
        default=str(Path(sys.executable).parent / "vlbench"),
        help="the vlbench command",
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]  # before we add ours: the machine is shared
    dataset = demo_dataset_dir()
    with served(args.vlbench, dataset) as (base_url, dataset_id):
        figures = asyncio.run(bench(base_url, dataset_id, args.seconds, args.concurrency))
    peer = figures[0].per_second
    cores = os.cpu_count()
    print(
        f"local Explore server, demo dataset, concurrency {args.concurrency}, "
        f"{cores} cores, load average before the run {load:.1f}"
    )
    heads = ("workload", "requests", "errors", "req/s", "p50 ms", "p99 ms", "x healthcheck")
    print(
        f"{heads[0]:<12} " + " ".join(f"{h:>{w}}" for h, w in zip(heads[1:], _WIDTHS, strict=True))
    )
    for f in figures:
        print(
            f"{f.name:<12} {f.requests:>8} {f.errors:>6} {f.per_second:>8.1f} {f.p50_ms:>8.1f} "
            f"{f.p99_ms:>8.1f} {f.per_second / peer:>14.3f}"
        )


if __name__ == "__main__":
    main()
