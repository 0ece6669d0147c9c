"""Is vlbench's executor the bottleneck? Its throughput against a bare aiohttp loop, unthrottled.

`vlbench serve` runs as a subprocess (the demo dataset, no auth). Every round sends the same
requests (the demo queries as full-text searches at two granularities, first page each, about
170 KB a body) with the same concurrency (N workers pulling from one iterator) through one
aiohttp session with the same connection limit, four ways:
- bare: `response.read()` only: the peer issue 4 names, a loop that does nothing with the body;
- bare+orjson: the same plus `orjson.loads` of each body (what any client must at least do);
- vlbench executor: `run_plan` with its client (typed Arrow pages), retries armed, no rate limit,
  rows made for the store, into a sink that keeps nothing;
- vlbench + run dir: the same writing a run directory (created, journal appended, Parquet
  finished: everything `vlbench run` does for these requests).
The four run in a rotating order inside each round, and each vlbench figure is divided by the
bare figure of its own round (a loaded machine changes speed from one minute to the next); the
median of those ratios is reported (target >= 0.9), with the CPU time per request of this
process and of the server, which show where the time goes.
Then orjson against json on a body of about 100 KB from the same server.

Run: .venv/bin/python bench/bench_client.py [--rounds 4] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import psutil  # type: ignore[import-untyped]  # no stubs in the venv
import pyarrow as pa

from runner.api.client import ExploreClient
from runner.execute import ExecuteOptions, RunSink, run_plan
from runner.plan import Plan, expand
from runner.server.lifecycle import start_serve_process
from runner.store import RunCounts, RunWriter
from runner.suite import parse_suite, suite_hash

ROOT = Path(__file__).resolve().parent.parent
QUERIES_FILE = ROOT / "queries" / "demo-queries.tsv"

Round = Callable[[Plan], Awaitable[None]]


def start_server() -> tuple[subprocess.Popen[str], str, str]:
    """`vlbench serve` on a free port, no auth; the process, base URL and dataset id."""
    server = start_serve_process(["--dataset", "demo", "--no-auth"], cwd=ROOT)
    return server.process, server.base_url, server.dataset_id


def make_plan(base_url: str, dataset_id: str, concurrency: int) -> tuple[Plan, str, str]:
    text = f"""
name: bench-client
base_url: {base_url}
dataset_id: {dataset_id}
rate_limit: 1000000
concurrency: {concurrency}
modes: [fts]
sweep: {{granularity: [0, 1]}}
pagination: {{max_pages: 1}}
queries_file: {QUERIES_FILE}
"""
    suite = parse_suite(text, path=ROOT / "bench" / "bench-client.yaml")
    return expand(suite), suite.name, suite_hash(suite)


def first_requests(plan: Plan, n: int) -> Plan:
    """The plan cut to its first `n` wire requests (for the warm-up)."""
    requests = plan.requests[:n]
    specs = tuple(spec for request in requests for spec in request.specs)
    return dataclasses.replace(plan, requests=requests, specs=specs)


class NullSink:
    """A run that keeps nothing: isolates the executor and client from the store."""

    def __init__(self, planned: int) -> None:
        self.run_dir = Path("/dev/null")
        self._counts = RunCounts(requests_planned=planned)
        self._keys: set[str] = set()

    @property
    def counts(self) -> RunCounts:
        return self._counts

    def completed_keys(self) -> set[str]:
        return set()

    def record(self, request_rows: pa.RecordBatch, hit_rows: pa.RecordBatch) -> None:
        self._keys.update(request_rows.column("request_key").to_pylist())
        self._counts = RunCounts(self._counts.requests_planned, len(self._keys))

    def finish(self, status: str) -> None:
        return None


def connector(concurrency: int) -> aiohttp.TCPConnector:
    """The connection pool every way of sending uses: the same limit for all."""
    return aiohttp.TCPConnector(limit=concurrency * 2)


def vlbench_round(
    name: str, digest: str, base_url: str, dataset_id: str, concurrency: int, *, store: bool
) -> Round:
    async def run(plan: Plan) -> None:
        with tempfile.TemporaryDirectory() as out:
            writer: RunSink = NullSink(len(plan))
            if store:
                writer = RunWriter.create(
                    out,
                    suite_name=name,
                    suite_hash=digest,
                    base_url=base_url,
                    dataset_id=dataset_id,
                    tool_version="bench",
                    requests_planned=len(plan),
                )
            options = ExecuteOptions(concurrency=concurrency, max_pages=1)
            async with aiohttp.ClientSession(connector=connector(concurrency)) as session:
                client = ExploreClient(base_url, dataset_id, session=session)
                result = await run_plan(plan, writer, client=client, options=options)
        if result.status != "complete" or result.counts.requests_failed:
            raise RuntimeError(f"vlbench round did not complete: {result}")

    return run


def bare_round(base_url: str, dataset_id: str, concurrency: int, *, parse: bool) -> Round:
    """A plain aiohttp loop sending the same requests; with `parse`, `orjson.loads` of each."""
    url = f"{base_url}/api/v1/explore/{dataset_id}"

    async def run(plan: Plan) -> None:
        params = [{**request.params(), "page_number": "0"} for request in plan.requests]
        async with aiohttp.ClientSession(connector=connector(concurrency)) as session:
            queue: Iterator[dict[str, str]] = iter(params)

            async def worker() -> None:
                for query in queue:
                    async with session.get(url, params=query) as response:
                        body = await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"bare round: HTTP {response.status}")
                        if parse:
                            orjson.loads(body)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    return run


async def measure(run: Round, plan: Plan, server: psutil.Process) -> tuple[float, float, float]:
    """(requests/s, this process's CPU s a request, the server's CPU s a request) of one round."""
    n = len(plan.requests)
    server_cpu = sum(server.cpu_times()[:2])
    started, cpu = time.perf_counter(), time.process_time()
    await run(plan)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    server_cpu = sum(server.cpu_times()[:2]) - server_cpu
    return n / wall, cpu / n, server_cpu / n


async def largest_body(plan: Plan, base_url: str, dataset_id: str) -> bytes:
    """The first page body closest to 100 KB among the plan's requests."""
    url = f"{base_url}/api/v1/explore/{dataset_id}"
    best = b""
    async with aiohttp.ClientSession() as session:
        for request in plan.requests[:60]:
            async with session.get(url, params={**request.params(), "page_number": "0"}) as r:
                body = await r.read()
            if abs(len(body) - 100_000) < abs(len(best) - 100_000):
                best = body
    return best


LABELS = {
    "bare": "bare aiohttp loop (read)",
    "bare+orjson": "bare loop + orjson.loads",
    "executor": "vlbench run_plan, no store",
    "stored": "vlbench run_plan + run dir",
}


async def main(rounds: int, concurrency: int) -> None:
    process, base_url, dataset_id = start_server()
    try:
        server = psutil.Process(process.pid)
        plan, name, digest = make_plan(base_url, dataset_id, concurrency)
        ways: dict[str, Round] = {
            "bare": bare_round(base_url, dataset_id, concurrency, parse=False),
            "bare+orjson": bare_round(base_url, dataset_id, concurrency, parse=True),
            "executor": vlbench_round(name, digest, base_url, dataset_id, concurrency, store=False),
            "stored": vlbench_round(name, digest, base_url, dataset_id, concurrency, store=True),
        }
        n = len(plan.requests)
        print(f"vlbench serve (subprocess, no auth) at {base_url}; {n} fts requests a round,")
        print(
            f"concurrency {concurrency} and at most {2 * concurrency} connections for every way; "
            f"{rounds} rounds, the ways in rotating order"
        )
        await ways["bare"](plan)  # warms the server's caches
        for kind in ("executor", "stored"):  # first-use costs (imports) are not throughput
            await ways[kind](first_requests(plan, 2 * concurrency))
        figures: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in ways}
        kinds = list(ways)
        for r in range(rounds):
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                figures[kind].append(await measure(ways[kind], plan, server))
        report(figures)

        body = await largest_body(plan, base_url, dataset_id)
        loops = 200
        t_json = min(timeit.repeat(lambda: json.loads(body), number=loops, repeat=3)) / loops
        t_orjson = min(timeit.repeat(lambda: orjson.loads(body), number=loops, repeat=3)) / loops
        print(
            f"parse a {len(body) / 1000:.0f} KB body: json {t_json * 1e3:.3f} ms, "
            f"orjson {t_orjson * 1e3:.3f} ms, orjson is {t_json / t_orjson:.1f}x faster"
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def report(figures: dict[str, list[tuple[float, float, float]]]) -> None:
    """Rates, CPU a request, and each way's median ratio to the two bare loops of its rounds."""
    print(
        f"{'':28} {'req/s':>7} {'of bare':>8} {'of bare+orjson':>15}"
        f" {'client CPU':>11} {'server CPU':>11}   per-round req/s"
    )
    for kind, label in LABELS.items():
        rows = figures[kind]
        ratios = [
            statistics.median(r[0] / peer[0] for r, peer in zip(rows, figures[p], strict=True))
            for p in ("bare", "bare+orjson")
        ]
        rate = statistics.median(r[0] for r in rows)
        client = statistics.median(r[1] for r in rows) * 1e3
        server = statistics.median(r[2] for r in rows) * 1e3
        rounds = ", ".join(f"{r[0]:.0f}" for r in rows)
        print(
            f"{label:28} {rate:7.1f} {ratios[0]:8.3f} {ratios[1]:15.3f}"
            f" {client:8.2f} ms {server:8.2f} ms   {rounds}"
        )
    print("ratios: median over rounds of (rate / the bare rate of the same round); target >= 0.9")
    print("CPU: this process's and the server's CPU time a request (median over rounds)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    os.environ.pop("VL_TOKEN", None)
    asyncio.run(main(args.rounds, args.concurrency))
