"""What a large nightly suite costs: wall time against the rate limit's floor, memory, Parquet size.

`vlbench serve` runs as a subprocess (demo dataset, no auth, no server-side limit). A suite of N
distinct full-text queries (first page each) is run by `vlbench run` as a subprocess, at a suite
rate limit R requests/s, so the floor is N / R seconds. Measured in the same session:
- one worker at N/2 and at N requests: wall / floor, peak RSS of the runner process (exact:
  the child reports its own `ru_maxrss`), Parquet bytes per million hits and per request;
- the same N requests as 2 shards run in parallel (`--shard 1/2`, `--shard 2/2`, each at R/2)
  and `vlbench merge`: wall time against the single worker (the rate limit is the bottleneck,
  so sharding does not buy speed at a fixed total rate; it spreads the work over CI workers);
  the merged run must hold exactly the single run's hits;
- `vlbench export` of the single run to Parquet: time and peak RSS.
Then it extrapolates to 100,000 requests: wall time from the marginal rate between N/2 and N
plus the fixed cost; memory from the peak at N plus the growth of what is held per request (the
suite and its plan, measured by expanding a 100k-request suite in a child process), since the
store streams rows to Parquet (its buffer is bounded by roll_rows).

Run: .venv/bin/python bench/bench_scale.py [--requests 1500] [--rate 500]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from runner.server.lifecycle import start_serve_process

ROOT = Path(__file__).resolve().parent.parent
QUERIES_FILE = ROOT / "queries" / "demo-queries.tsv"
# The child prints its own peak RSS (KiB on Linux) on stderr when it exits.
_CHILD = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print(f'MAXRSS_KB={resource.getrusage(resource.RUSAGE_SELF)"
    ".ru_maxrss}', file=sys.stderr))\n"
    "from runner.cli import main\n"
    "sys.argv[0] = 'vlbench'\n"
    "main()\n"
)
_CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("VL_")}


@dataclass(frozen=True, slots=True)
class Step:
    wall_s: float
    maxrss_mb: float
    stdout: str


def vlbench(*args: str) -> Step:
    """Run `vlbench ARGS` as a child process; its wall time and its own peak RSS."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_CLEAN_ENV,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"vlbench {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    match = re.search(r"MAXRSS_KB=(\d+)", done.stderr)
    return Step(wall, int(match.group(1)) / 1024 if match else float("nan"), done.stdout)


def start_server() -> tuple[subprocess.Popen[str], str, str]:
    """`vlbench serve` on a free port, no auth; the process, base URL and dataset id."""
    server = start_serve_process(
        ["--dataset", "demo", "--no-auth"],
        cwd=ROOT,
        env={**_CLEAN_ENV, "OPENBLAS_NUM_THREADS": "1"},
    )
    return server.process, server.base_url, server.dataset_id


def write_queries(path: Path, n: int) -> None:
    """N distinct three-word full-text queries from the demo captions' vocabulary."""
    words: list[str] = []
    for line in QUERIES_FILE.read_text(encoding="utf-8").splitlines():
        for word in re.findall(r"[a-z]{4,}", line.split("\t", 1)[-1].lower()):
            if word not in words:
                words.append(word)
    triples = itertools.islice(itertools.combinations(words, 3), n)
    lines = [f"s{i}\t{a} {b} {c}" for i, (a, b, c) in enumerate(triples)]
    if len(lines) < n:
        raise RuntimeError(f"only {len(lines)} distinct queries can be made")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_suite(folder: Path, name: str, n: int, rate: float, base_url: str, dataset: str) -> Path:
    queries = folder / f"{name}.tsv"
    write_queries(queries, n)
    suite = {
        "name": name,
        "base_url": base_url,
        "dataset_id": dataset,
        "rate_limit": rate,
        "concurrency": 16,
        "timeout_s": 30,
        "retries": {"max_attempts": 3, "backoff_s": 0.1, "max_backoff_s": 2},
        "pagination": {"max_pages": 1},
        "modes": ["fts"],
        "queries_file": str(queries),
    }
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(suite), encoding="utf-8")
    return path


_PLAN_MEMORY = """
import gc, json, sys
from pathlib import Path
import psutil
from runner.plan import expand
from runner.suite import load_suite
import runner.cli  # the imports a run has anyway
gc.collect()
before = psutil.Process().memory_info().rss
plan = expand(load_suite(sys.argv[1]))
print(len(plan.specs), (psutil.Process().memory_info().rss - before) / 1e6)
"""


def plan_memory(suite: Path) -> tuple[int, float]:
    """Requests of `suite` and the MB its loaded suite and expanded plan hold (a child process)."""
    done = subprocess.run(
        [sys.executable, "-c", _PLAN_MEMORY, str(suite)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    count, mb = done.stdout.split()
    return int(count), float(mb)


def run_dir_of(stdout: str) -> Path:
    match = re.search(r"^run_dir: (.+)$", stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no run_dir in:\n{stdout}")
    return Path(match.group(1).strip())


def hits_of(run_dir: Path) -> int:
    return int(json.loads((run_dir / "manifest.json").read_text())["counts"]["hits"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args()
    n, rate = args.requests, args.rate
    half = n // 2
    server, base_url, dataset = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="vlbench-bench-scale-") as scratch:
            folder = Path(scratch)
            small = write_suite(folder, "scale-half", half, rate, base_url, dataset)
            big = write_suite(folder, "scale", n, rate, base_url, dataset)
            out = str(folder / "runs")
            one_half = vlbench("run", str(small), "--out", out, "--quiet")
            one = vlbench("run", str(big), "--out", out, "--quiet")
            single_dir = run_dir_of(one.stdout)

            started = time.perf_counter()
            shards = [
                subprocess.Popen(
                    [sys.executable, "-c", _CHILD, "run", str(big), "--shard", f"{k}/2"]
                    + ["--out", str(folder / f"w{k}"), "--quiet"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                    env=_CLEAN_ENV,
                )
                for k in (1, 2)
            ]
            outputs = [p.communicate() for p in shards]
            sharded_wall = time.perf_counter() - started
            if any(p.returncode for p in shards):
                raise RuntimeError(f"a shard failed: {outputs}")
            shard_dirs = [run_dir_of(o) for o, _ in outputs]
            merged = vlbench("merge", *map(str, shard_dirs), "--out", str(folder / "merged"))
            merged_dir = run_dir_of(merged.stdout)
            exported = vlbench("export", str(single_dir), "-o", str(folder / "ids.parquet"))

            hits, hits_half = hits_of(single_dir), hits_of(run_dir_of(one_half.stdout))
            huge = write_suite(folder, "scale-100k", 100_000, rate, base_url, dataset)
            planned, plan_mb = plan_memory(huge)
            if planned != 100_000:
                raise RuntimeError(f"the 100k suite expanded to {planned} requests")
            same = (
                pl.read_parquet(merged_dir / "hits.parquet")
                .drop("page")
                .equals(
                    pl.read_parquet(single_dir / "hits.parquet")
                    .sort("request_key", "rank")
                    .drop("page")
                )
            )
            hits_bytes = (single_dir / "hits.parquet").stat().st_size
            req_bytes = (single_dir / "requests.parquet").stat().st_size
    finally:
        server.terminate()
        server.wait(timeout=10)

    floor, floor_half = n / rate, half / rate
    # Two points, N/2 and N: a fixed cost (start-up, imports, preflight, finish) plus a cost per
    # request. On a shared machine both are noisy: read the fits as orders of magnitude.
    per_request_s = (one.wall_s - one_half.wall_s) / (n - half)
    fixed_s = one.wall_s - per_request_s * n
    slope = (one.maxrss_mb - one_half.maxrss_mb) / (n - half)  # MB per request
    per_million = hits_bytes / hits * 1e6
    hits_per_request = hits / n
    print(f"suite: {n} fts requests, max_pages 1, rate limit {rate:g}/s (floor {floor:.1f} s)")
    print(f"{'':28}{'requests':>9}{'wall s':>9}{'wall/floor':>12}{'peak RSS MB':>13}")
    for label, count, step, fl in (
        ("one worker", half, one_half, floor_half),
        ("one worker", n, one, floor),
    ):
        ratio = step.wall_s / fl
        print(f"{label:28}{count:>9}{step.wall_s:>9.1f}{ratio:>12.2f}{step.maxrss_mb:>13.0f}")
    print(
        f"{'2 shards in parallel':28}{n:>9}{sharded_wall:>9.1f}{sharded_wall / floor:>12.2f}"
        f"{'':>13}   (vs one worker: {sharded_wall / one.wall_s:.2f}x)"
    )
    print(
        f"marginal rate {1 / per_request_s:.0f} requests/s = {1 / per_request_s / rate:.2f} x the "
        f"rate limit; fixed cost {fixed_s:.1f} s per run (start-up, preflight, finish)"
        if per_request_s > 0
        else "marginal rate: not measurable (noise larger than the difference)"
    )
    print(
        f"merge of the 2 shards: {merged.wall_s:.1f} s, peak RSS {merged.maxrss_mb:.0f} MB; "
        f"merged hits identical to the single run: {same}"
    )
    print(
        f"export of {hits} hits to Parquet: {exported.wall_s:.1f} s, "
        f"peak RSS {exported.maxrss_mb:.0f} MB"
    )
    print(
        f"Parquet: {per_million / 1e6:.1f} MB per million hits ({hits} hits, "
        f"{hits_per_request:.0f} per request); requests.parquet {req_bytes / n:.0f} B per request"
    )
    print(
        f"runner RSS grew {slope * 1000:.1f} MB per 1000 requests between {hits_half} and "
        f"{hits} hits; the store buffers at most roll_rows rows, so this growth levels off"
    )
    big_n = 100_000
    floor_big = big_n / rate
    wall_big = fixed_s + per_request_s * big_n if per_request_s > 0 else floor_big
    print(f"extrapolated to {big_n} requests of this kind:")
    print(
        f"  wall ~ {wall_big / 60:.1f} min at {rate:g}/s (floor {floor_big / 60:.1f} min); "
        f"at a hosted 10/s the floor alone is {big_n / 10 / 3600:.1f} h"
    )
    big_hits = hits_per_request * big_n
    # What grows with N for good is the suite and plan in memory (measured at 100k); the store
    # streams (bounded by its roll_rows buffer), so: RSS(N) + the plan's growth from N to 100k.
    print(
        f"  peak RSS ~ {one.maxrss_mb + plan_mb * (1 - n / big_n):.0f} MB = RSS at {n} + the "
        f"suite and plan's growth to {big_n} requests (measured: {plan_mb:.0f} MB at {big_n})"
    )
    print(f"  hits.parquet ~ {per_million * big_hits / 1e12:.0f} MB ({big_hits / 1e6:.1f} M hits)")


if __name__ == "__main__":
    main()
