"""The client's own cost: CPU a request of vlbench's executor against a bare aiohttp loop.

The peer is a server that is never the limit (`bench/_canned.py`: real first pages of the demo
dataset, about 100 hits each, served fixed from a child process), so that what is measured is
the client: every round sends the same requests (the demo queries as full-text searches at two
granularities, first page each) with the same concurrency (N workers pulling from one iterator)
through one aiohttp session with the same connection limit, five ways:
- bare: `response.read()` only;
- bare+orjson: the same plus `orjson.loads` of each body (what any client must at least do);
- vlbench executor: `run_plan` with its client (typed Arrow pages), retries armed, no rate limit,
  rows made for the store, into a sink that keeps nothing;
- vlbench + journal: the same into a real run writer that never rolls a Parquet part, its
  finish's CPU set aside: JSON parse, Arrow rows and journal, what the issue's target names;
- vlbench + run dir: the same writing a whole run directory (journal, Parquet parts, the final
  files: everything `vlbench run` does for these requests).
The five run in a rotating order inside each round. Printed per way: requests/s and this
process's CPU time a request (min and median over rounds), and the CPU ratio to bare+orjson of
the same round (min / median): the client's own cost of JSON parse, Arrow rows and journal.
Target: vlbench + journal <= 1.5 x bare+orjson.
Then the floor under that target: the CPU of turning one page into what a run stores (typed
Arrow) by each way at hand, against `orjson.loads` alone.

Run: .venv/bin/python bench/bench_client.py [--rounds 5] [--concurrency 8]
(`VLBENCH_BENCH_SCALE=N` multiplies the requests a round.)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import pyarrow as pa
import pyarrow.json as pa_json
from _canned import CannedServer, canned_pages
from _load import scale

from runner.api.client import ExploreClient
from runner.api.pages import CLUSTER_TYPE, parse_page
from runner.execute import ExecuteOptions, RunSink, run_plan
from runner.plan import Plan, expand
from runner.store import DEFAULT_ROLL_ROWS, RunCounts, RunWriter
from runner.suite import parse_suite, suite_hash

ROOT = Path(__file__).resolve().parent.parent
QUERIES_FILE = ROOT / "queries" / "demo-queries.tsv"

Round = Callable[[Plan], Awaitable[float | None]]


def make_plan(
    base_url: str, dataset_id: str, concurrency: int, copies: int
) -> tuple[Plan, str, str]:
    """The demo queries, `copies` times over (distinct ids and texts), two granularities."""
    lines = QUERIES_FILE.read_text(encoding="utf-8").splitlines()
    queries = Path(tempfile.mkdtemp(prefix="vlbench-bench-client-")) / "queries.tsv"
    queries.write_text(
        "".join(
            f"c{copy}-{line.split(chr(9))[0]}\t{line.split(chr(9))[-1]} {copy}\n"
            for copy in range(copies)
            for line in lines
            if "\t" in line
        ),
        encoding="utf-8",
    )
    text = f"""
name: bench-client
base_url: {base_url}
dataset_id: {dataset_id}
rate_limit: 1000000
concurrency: {concurrency}
modes: [fts]
sweep: {{granularity: [0, 1]}}
pagination: {{max_pages: 1}}
queries_file: {queries}
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


class JournalOnly:
    """A real `RunWriter` that never rolls a Parquet part, its finish's CPU kept aside.

    What remains of a round is the client's own cost the issue names: JSON parse, Arrow rows and
    the journal (every unit checked, framed, compressed and appended with one write).
    """

    def __init__(self, writer: RunWriter) -> None:
        self._writer = writer
        self.finish_cpu = 0.0

    @property
    def run_dir(self) -> Path:
        return self._writer.run_dir

    @property
    def counts(self) -> RunCounts:
        return self._writer.counts

    def completed_keys(self) -> set[str]:
        return self._writer.completed_keys()

    def record(self, request_rows: pa.RecordBatch, hit_rows: pa.RecordBatch) -> None:
        self._writer.record(request_rows, hit_rows)

    def finish(self, status: str) -> object:
        cpu = time.process_time()
        try:
            return self._writer.finish(status)
        finally:
            self.finish_cpu += time.process_time() - cpu


def vlbench_round(
    name: str, digest: str, base_url: str, dataset_id: str, concurrency: int, *, store: str
) -> Round:
    """`run_plan` into a sink: "none" (keeps nothing), "journal" or "parquet" (a whole run dir).

    The round's result is the CPU to take off its measure (the journal way's Parquet finish).
    """

    async def run(plan: Plan) -> float:
        with tempfile.TemporaryDirectory() as out:
            writer: RunSink = NullSink(len(plan))
            if store != "none":
                real = RunWriter.create(
                    out,
                    suite_name=name,
                    suite_hash=digest,
                    base_url=base_url,
                    dataset_id=dataset_id,
                    tool_version="bench",
                    requests_planned=len(plan),
                    roll_rows=10**9 if store == "journal" else DEFAULT_ROLL_ROWS,
                )
                writer = JournalOnly(real) if store == "journal" else real
            options = ExecuteOptions(concurrency=concurrency, max_pages=1)
            async with aiohttp.ClientSession(connector=connector(concurrency)) as session:
                client = ExploreClient(base_url, dataset_id, session=session)
                result = await run_plan(plan, writer, client=client, options=options)
        if result.status != "complete" or result.counts.requests_failed:
            raise RuntimeError(f"vlbench round did not complete: {result}")
        return writer.finish_cpu if isinstance(writer, JournalOnly) else 0.0

    return run


def bare_round(base_url: str, dataset_id: str, concurrency: int, *, parse: bool) -> Round:
    """A plain aiohttp loop sending the same requests; with `parse`, `orjson.loads` of each."""
    url = f"{base_url}/api/v1/explore/{dataset_id}"

    async def run(plan: Plan) -> None:
        params = [{**request.params(), "page_number": "0"} for request in plan.requests]
        async with aiohttp.ClientSession(connector=connector(concurrency)) as session:
            queue: Iterator[dict[str, str]] = iter(params)

            async def worker() -> None:
                for query in queue:  # noqa: B007 - the loop variable is the query
                    async with session.get(url, params=query) as response:
                        body = await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"bare round: HTTP {response.status}")
                        if parse:
                            orjson.loads(body)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    return run


async def measure(run: Round, plan: Plan) -> tuple[float, float]:
    """(requests/s, this process's CPU s a request) of one round, less what it set aside."""
    n = len(plan.requests)
    started, cpu = time.perf_counter(), time.process_time()
    aside = await run(plan) or 0.0
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu - aside
    return n / wall, cpu / n


LABELS = {
    "bare": "bare aiohttp loop (read)",
    "bare+orjson": "bare loop + orjson.loads",
    "executor": "vlbench run_plan, no store",
    "journal": "vlbench run_plan + journal",
    "stored": "vlbench + run dir (Parquet)",
}


async def main(rounds: int, concurrency: int) -> None:
    pages = canned_pages(8)
    with CannedServer(pages) as server:
        base_url, dataset_id = server.base_url, server.dataset_id
        copies = max(1, round(10 * scale()))
        plan, name, digest = make_plan(base_url, dataset_id, concurrency, copies)
        ways: dict[str, Round] = {
            "bare": bare_round(base_url, dataset_id, concurrency, parse=False),
            "bare+orjson": bare_round(base_url, dataset_id, concurrency, parse=True),
            "executor": vlbench_round(
                name, digest, base_url, dataset_id, concurrency, store="none"
            ),
            "journal": vlbench_round(
                name, digest, base_url, dataset_id, concurrency, store="journal"
            ),
            "stored": vlbench_round(
                name, digest, base_url, dataset_id, concurrency, store="parquet"
            ),
        }
        n = len(plan.requests)
        print(f"canned server (child process, fixed real pages) at {base_url}; {n} requests a")
        print(
            f"round, concurrency {concurrency} and at most {2 * concurrency} connections for "
            f"every way; {rounds} rounds, the ways in rotating order"
        )
        await ways["bare"](plan)  # warms the connections
        for kind in (
            "executor",
            "journal",
            "stored",
        ):  # first-use costs (imports) are not throughput
            await ways[kind](first_requests(plan, 2 * concurrency))
        figures: dict[str, list[tuple[float, float]]] = {kind: [] for kind in ways}
        kinds = list(ways)
        for r in range(rounds):
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                figures[kind].append(await measure(ways[kind], plan))
        report(figures)

    page_to_arrow([page.encode() for page in pages], rounds)


def page_to_arrow(bodies: list[bytes], rounds: int) -> None:
    """CPU a page of each way from a JSON body to what a run stores, against `orjson.loads`.

    Each round parses 64 fresh copies of the canned bodies (as if just off the socket: a body
    parsed again and again stays in the CPU's cache and looks up to 2 x cheaper).
    """
    schema = pa.schema([pa.field("clusters", pa.list_(CLUSTER_TYPE))])
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    reads = pa_json.ReadOptions(use_threads=False)
    ways: dict[str, Callable[[bytes], object]] = {
        "orjson.loads (the peer's parse)": orjson.loads,
        "json.loads (stdlib)": json.loads,
        "vlbench parse_page (msgspec)": lambda body: parse_page(body, 0),
        "orjson + pa.array(dicts), no checks": lambda body: pa.array(
            orjson.loads(body)["clusters"], type=CLUSTER_TYPE
        ),
        "pyarrow.json.read_json": lambda body: pa_json.read_json(
            io.BytesIO(body), read_options=reads, parse_options=options
        ),
    }
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(max(rounds, 3)):
        for name, parse in ways.items():
            fresh = [bytes(bytearray(bodies[i % len(bodies)])) for i in range(64)]
            started = time.process_time()
            for body in fresh:
                parse(body)
            cpu[name].append((time.process_time() - started) / len(fresh))
    peer = statistics.median(cpu["orjson.loads (the peer's parse)"])
    size = statistics.mean(map(len, bodies)) / 1000
    print(f"a page ({size:.0f} KB, ~100 clusters) to what a run stores, CPU ms (median of rounds):")
    for name, figures in cpu.items():
        median = statistics.median(figures)
        print(f"  {name:38} {median * 1e3:7.3f}  {median / peer:5.2f} x orjson.loads")


def report(figures: dict[str, list[tuple[float, float]]]) -> None:
    """Rates, CPU a request, and each way's CPU ratio to bare+orjson of the same round."""
    print(
        f"{'':28} {'req/s min/med':>14} {'CPU ms/request min/med':>23}"
        f" {'CPU / bare+orjson min/med':>26}"
    )
    peer = figures["bare+orjson"]
    for kind, label in LABELS.items():
        rows = figures[kind]
        rates = [r[0] for r in rows]
        cpus = [r[1] * 1e3 for r in rows]
        ratios = [r[1] / p[1] for r, p in zip(rows, peer, strict=True)]
        print(
            f"{label:28} {min(rates):6.0f}/{statistics.median(rates):<7.0f}"
            f" {min(cpus):11.3f}/{statistics.median(cpus):<11.3f}"
            f" {min(ratios):13.2f}/{statistics.median(ratios):<12.2f}"
        )
    for kind in ("journal", "stored"):
        ratio = statistics.median(r[1] / p[1] for r, p in zip(figures[kind], peer, strict=True))
        verdict = "meets" if ratio <= 1.5 else "misses"
        print(
            f"client CPU of {LABELS[kind]} = {ratio:.2f} x bare+orjson (median of rounds): "
            f"{verdict} the target of <= 1.5"
        )
    print(
        "journal: JSON parse, Arrow rows, journal (the run's Parquet finish not counted); "
        "run dir: everything vlbench run writes, Parquet parts and finish included"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    os.environ.pop("VL_TOKEN", None)
    asyncio.run(main(args.rounds, args.concurrency))
