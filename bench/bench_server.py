"""How fast does the local Explore server answer? fts, caption and semantic at concurrency 16.

The server runs as a subprocess (`vlbench serve` on a free port, auth on, the demo dataset), with
one worker and then with two (`--workers 2`, two processes on one port); the client is one aiohttp
session with 16 workers in this process, so it shares the machine's cores with the server. Every
workload runs `--rounds` times for `--seconds`, round-robin, page 0:

- healthcheck: the same HTTP path, auth and JSON without a search: the peer every rate is a
  share of (`x health`).
- fts: distinct COCO captions as queries (the images' other human captions), each once a round.
- semantic, caption (cached): 64 query texts, sent to every worker once before timing, then cycled:
  the query-embedding cache answers, the result cache (32 requests) never does, so each request is
  a whole search and a page written.
- semantic (uncached): texts never sent before, so each request embeds its query: bounded by the
  encoder. Its peer is the encoder's own rate, one query at a time in this process (`x encoder`).

Printed per workload: requests, errors, req/s as min and median of the rounds (the machine is
shared and noisy: the median is the figure, the min shows the noise), p50 and p99 latency over all
rounds, and the median as a share of the healthcheck's median. Target: fts, caption and semantic
(cached) >= 1,000 req/s with one worker, i.e. >= 0.1 x healthcheck.

Run: .venv/bin/python bench/bench_server.py [--seconds 1.5] [--rounds 3] [--workers 1 2]
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
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import aiohttp
import psutil  # type: ignore[import-untyped]  # no stubs in the venv

from runner.api.auth import DEMO_CREDENTIALS, ENV_API_KEY, ENV_API_SECRET, bearer_header, mint_token
from runner.server.demo import demo_dataset_dir, demo_images
from runner.server.encoder import load_encoder
from runner.server.lifecycle import serve_process

Params = Callable[[int], dict[str, str]]
_GRACE_S = 2.0
_CACHED_QUERIES = 64
_TARGET_RATE = 1000.0
_TARGET_SHARE = 0.1
_SEARCHES = ("fts", "semantic (cached)", "caption (cached)")


@dataclass(slots=True)
class Figures:
    """What one workload achieved over its rounds."""

    name: str
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_s: float = 0.0  # the server's CPU time (all its processes) over the rounds

    @property
    def cpu_ms(self) -> float:
        """The server's CPU time per request: what the rate would be bound by on a free core."""
        return 1000 * self.cpu_s / max(1, len(self.latencies))

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def quantile_ms(self, q: float) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return (
            1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q * 100) - 1]
        )


@dataclass(frozen=True, slots=True)
class Served:
    """A running server: where, which dataset, and its processes (to read their CPU time)."""

    base_url: str
    dataset_id: str
    process: psutil.Process

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server and its workers so far."""
        total = 0.0
        for p in [self.process, *self.process.children(recursive=True)]:
            try:
                times = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def rss_mib(self) -> float:
        """Resident memory of the server's processes (the multiprocessing helper excluded)."""
        total = 0
        for p in [self.process, *self.process.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20


@contextmanager
def served(vlbench: str, dataset: Path, workers: int) -> Iterator[Served]:
    """`vlbench serve` on a free port; stopped on exit."""
    env = {**os.environ, ENV_API_KEY: "", ENV_API_SECRET: ""}  # the demo key pair
    args = ["--dataset", str(dataset), "--workers", str(workers)]
    with serve_process(args, command=[vlbench], env=env) as server:
        yield Served(server.base_url, server.dataset_id, psutil.Process(server.process.pid))


async def drive(
    session: aiohttp.ClientSession, url: str, params: Params, seconds: float, concurrency: int
) -> tuple[list[float], int, float]:
    """Send requests from `concurrency` workers for `seconds`: (latencies in s, errors, elapsed)."""
    latencies: list[float] = []
    errors = 0
    numbers = count()
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            query = params(next(numbers))
            sent = time.perf_counter()
            async with session.get(url, params=query) as response:
                await response.read()
                ok = response.status == 200
            latencies.append(time.perf_counter() - sent)
            errors += not ok

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    # Requests still running long after the deadline are cut off (and not counted), so that a
    # slow machine cannot stretch the benchmark past its budget.
    _, late = await asyncio.wait(workers, timeout=seconds + _GRACE_S)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    return latencies, errors, time.perf_counter() - started


def workloads(base_url: str, dataset_id: str, texts: list[str]) -> list[tuple[str, str, Params]]:
    """(name, URL, parameters of request i) of every workload."""
    explore = f"{base_url}/api/v1/explore/{dataset_id}"
    cached = texts[:_CACHED_QUERIES]
    fresh = texts[_CACHED_QUERIES:]
    # Uncached texts are drawn from the end of the pool, one counter for the whole run, so that
    # no text reaches a server twice (fts uses the front of the pool; it caches no query).
    unseen = count()

    def fts(i: int) -> dict[str, str]:
        return {"entity_type": "IMAGES", "vql": _vql("fts", fresh[i % len(fresh)])}

    def semantic_cached(i: int) -> dict[str, str]:
        return {"entity_type": "IMAGES", "vql": _vql("semantic", cached[i % len(cached)])}

    def caption_cached(i: int) -> dict[str, str]:
        text = cached[(i + _CACHED_QUERIES // 2) % len(cached)]
        return {"entity_type": "IMAGES", "caption": text, "textual_similarity_threshold": "0.7"}

    def semantic_uncached(i: int) -> dict[str, str]:
        return {"entity_type": "IMAGES", "vql": _vql("semantic", fresh[-1 - next(unseen)])}

    return [
        ("healthcheck", f"{base_url}/api/v1/healthcheck", lambda i: {}),
        ("fts", explore, fts),
        ("semantic (cached)", explore, semantic_cached),
        ("caption (cached)", explore, caption_cached),
        ("semantic (uncached)", explore, semantic_uncached),
    ]


def _vql(op: str, text: str) -> str:
    body: dict[str, object] = {"op": op, "value": text}
    if op == "semantic":
        body["threshold"] = 0.7
    return json.dumps([{"text": body}])


async def warm(explore: str, headers: dict[str, str], cached: list[str], workers: int) -> None:
    """Embed the cached texts in every worker: each pass uses new connections, which the kernel
    spreads over the workers; enough passes reach each worker with each text (1 - 2^-8)."""
    passes = 1 if workers == 1 else 8
    connector = aiohttp.TCPConnector(force_close=True, limit=4)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        for _ in range(passes):
            for text in cached:
                params = {"entity_type": "IMAGES", "vql": _vql("semantic", text)}
                async with session.get(explore, params=params) as response:
                    await response.read()


async def bench(
    server: Served, texts: list[str], args: argparse.Namespace, workers: int
) -> list[Figures]:
    base_url, dataset_id = server.base_url, server.dataset_id
    headers = bearer_header(mint_token(DEMO_CREDENTIALS, ttl_s=600))
    explore = f"{base_url}/api/v1/explore/{dataset_id}"
    await warm(explore, headers, texts[:_CACHED_QUERIES], workers)
    plan = workloads(base_url, dataset_id, texts)
    figures = {name: Figures(name) for name, _, _ in plan}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        for _ in range(args.rounds):
            for name, url, params in plan:
                cpu_before = server.cpu_s()
                latencies, errors, elapsed = await drive(
                    session, url, params, args.seconds, args.concurrency
                )
                # Searches cut off at the deadline still run in the server's index threads
                # (FIFO): one more search through the same queue returns once they are done.
                async with session.get(explore, params={"entity_type": "IMAGES"}) as drained:
                    await drained.read()
                f = figures[name]
                f.cpu_s += server.cpu_s() - cpu_before
                f.rates.append(len(latencies) / elapsed)
                f.latencies += latencies
                f.errors += errors
    return list(figures.values())


def encoder_rate(texts: list[str], seconds: float) -> float:
    """Distinct queries embedded per second by one thread of this process (the encoder's own)."""
    encoder = load_encoder()
    encoder.encode_query("warm up")
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.encode_query(texts[done % len(texts)] + f" ({done})")  # never a cached text
        done += 1
    return done / (time.perf_counter() - started)


def report(figures: list[Figures], workers: int, encoder_qps: float) -> list[str]:
    """The table for one worker count; returns the searches that miss the target."""
    health = figures[0].median
    print(f"\n{workers} worker{'s' if workers > 1 else ''}:")
    head = ("workload", "requests", "errors", "min req/s", "median", "p50 ms", "p99 ms", "x health")
    print(
        f"{head[0]:<20} {head[1]:>8} {head[2]:>6} {head[3]:>9} {head[4]:>8} {head[5]:>7} "
        f"{head[6]:>7} {head[7]:>8} {'CPU ms/req':>10} {'1 / CPU':>8}"
    )
    for f in figures:
        print(
            f"{f.name:<20} {len(f.latencies):>8} {f.errors:>6} {min(f.rates):>9.0f} "
            f"{f.median:>8.0f} {f.quantile_ms(0.50):>7.1f} {f.quantile_ms(0.99):>7.1f} "
            f"{f.median / health:>8.3f} {f.cpu_ms:>10.3f} {1000 / f.cpu_ms:>8.0f}"
        )
    uncached = figures[-1].median
    print(
        f"semantic (uncached): {uncached:.0f} req/s = {uncached / encoder_qps:.2f} x the encoder's "
        f"own rate ({encoder_qps:.0f} queries/s, one thread, this process)"
    )
    return [
        f.name
        for f in figures
        if f.name in _SEARCHES and (f.median < _TARGET_RATE or f.median < _TARGET_SHARE * health)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per workload a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--vlbench",
        default=str(Path(sys.executable).parent / "vlbench"),
        help="the vlbench command",
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]  # before we add ours: the machine is shared
    texts = [c for image in demo_images() for c in image.captions[1:]]
    encoder_qps = encoder_rate(texts, seconds=2.0)
    dataset = demo_dataset_dir()
    print(
        f"local Explore server, demo dataset ({len(demo_images()):,} images), concurrency "
        f"{args.concurrency}, {args.rounds} rounds x {args.seconds:g} s, {os.cpu_count()} cores "
        f"shared with the client, load average before the run {load:.1f} (a shared machine: "
        f"figures are noisy)"
    )
    misses: list[str] = []
    for workers in args.workers:
        with served(args.vlbench, dataset, workers) as server:
            figures = asyncio.run(bench(server, texts, args, workers))
        missed = report(figures, workers, encoder_qps)
        if workers == 1:
            misses = missed
    if 1 in args.workers:
        verdict = "met" if not misses else f"missed by {', '.join(misses)}"
        print(
            f"\ntarget (1 worker): fts, semantic and caption (cached) >= {_TARGET_RATE:,.0f} req/s "
            f"and >= {_TARGET_SHARE} x healthcheck: {verdict}"
        )


if __name__ == "__main__":
    main()
