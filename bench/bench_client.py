"""Is vlbench's executor the bottleneck? Its throughput against a bare aiohttp loop, unthrottled.

`vlbench serve` runs as a subprocess (the demo dataset, no auth). The same requests (the demo
queries as full-text searches at two granularities, first page each) are sent at the same
concurrency by:
- vlbench: `run_plan` with its client (typed parsing), retries armed, no rate limit; once with
  a sink that keeps nothing (the executor alone) and once writing a run directory (rows built,
  journal appended, Parquet finished);
- bare: one aiohttp session, N workers over a shared iterator, `orjson.loads` of each body.
They alternate for a few rounds; median throughputs are compared (target >= 0.9), with the
CPU time this process spent per request.
Then orjson against json on a body of about 100 KB from the same server.

Run: .venv/bin/python bench/bench_client.py [--rounds 4] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pyarrow as pa

from runner.client import ExploreClient
from runner.execute import ExecuteOptions, RunSink, run_plan
from runner.plan import Plan, expand
from runner.store import RunCounts, RunWriter
from runner.suite import parse_suite, suite_hash

ROOT = Path(__file__).resolve().parent.parent
QUERIES_FILE = ROOT / "queries" / "demo-queries.tsv"


def start_server() -> tuple[subprocess.Popen[str], str, str]:
    """`vlbench serve` on a free port, no auth; returns the process, base URL and dataset id."""
    command = [sys.executable, "-c", "from runner.cli import main; main()"]
    process = subprocess.Popen(
        [*command, "serve", "--dataset", "demo", "--port", "0", "--no-auth"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    found: dict[str, str] = {}
    for line in process.stdout:
        key, _, value = line.strip().partition(": ")
        found[key] = value
        if "base_url" in found and "dataset_id" in found:
            return process, found["base_url"], found["dataset_id"]
    raise RuntimeError("vlbench serve ended before printing its address")


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


async def vlbench_round(
    plan: Plan,
    name: str,
    digest: str,
    base_url: str,
    dataset_id: str,
    concurrency: int,
    store: bool,
) -> tuple[float, float]:
    """Seconds (wall, CPU of this process) for run_plan to send, parse and record the plan."""
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
        connector = aiohttp.TCPConnector(limit=concurrency * 2)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = ExploreClient(base_url, dataset_id, session=session)
            started, cpu = time.perf_counter(), time.process_time()
            result = await run_plan(plan, writer, client=client, options=options)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.status != "complete" or result.counts.requests_failed:
        raise RuntimeError(f"vlbench round did not complete: {result}")
    return elapsed, cpu


async def bare_round(
    plan: Plan, base_url: str, dataset_id: str, concurrency: int
) -> tuple[float, float]:
    """Seconds (wall, CPU) for a plain aiohttp loop to send the same requests and parse each."""
    url = f"{base_url}/api/v1/explore/{dataset_id}"
    params = [{**request.params(), "page_number": "0"} for request in plan.requests]
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue: Iterator[dict[str, str]] = iter(params)

        async def worker() -> None:
            for query in queue:
                async with session.get(url, params=query) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"bare round: HTTP {response.status}")
                    orjson.loads(body)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, time.process_time() - cpu


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


async def main(rounds: int, concurrency: int) -> None:
    process, base_url, dataset_id = start_server()
    try:
        plan, name, digest = make_plan(base_url, dataset_id, concurrency)
        n = len(plan.requests)
        print(f"vlbench serve (subprocess, no auth) at {base_url}; {n} fts requests a round,")
        print(f"concurrency {concurrency}, {rounds} rounds each, alternating (after a warm-up)")
        await bare_round(plan, base_url, dataset_id, concurrency)  # warms the server's caches
        rates: dict[str, list[float]] = {"bare": [], "executor": [], "stored": []}
        cpus: dict[str, list[float]] = {"bare": [], "executor": [], "stored": []}
        for _ in range(rounds):
            for kind in rates:
                if kind == "bare":
                    wall, cpu = await bare_round(plan, base_url, dataset_id, concurrency)
                else:
                    wall, cpu = await vlbench_round(
                        plan, name, digest, base_url, dataset_id, concurrency, kind == "stored"
                    )
                rates[kind].append(n / wall)
                cpus[kind].append(cpu / n)
        labels = {
            "bare": "bare aiohttp loop",
            "executor": "vlbench run_plan, no store",
            "stored": "vlbench run_plan + run dir",
        }
        peer = statistics.median(rates["bare"])
        for kind, label in labels.items():
            rate, cpu = statistics.median(rates[kind]), statistics.median(cpus[kind])
            print(
                f"{label:27} {rate:7.1f} req/s  {rate / peer:6.3f} of bare"
                f"  client CPU {cpu * 1e3:5.2f} ms/request  (rounds: {_list(rates[kind])})"
            )
        print("target: vlbench >= 0.9 of bare")

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


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    os.environ.pop("VL_TOKEN", None)
    asyncio.run(main(args.rounds, args.concurrency))
