"""A large nightly suite at a fixed rate: wall time against the floor, memory by quarter, Parquet.

`vlbench serve` runs as a child process (the demo dataset, no auth, `--workers 2` when this
branch's server has the option, else one process: the bench says which). A suite of N distinct
full-text queries (first page each) is run by `vlbench run` in a child process at a rate limit of
R = 200 requests a second, so the floor is N / R seconds. Printed:
- wall / floor for the whole process (start-up, plan, preflight, the run, finish) and for the
  sending alone (first to last `sent_at` in requests.parquet, + one interval); target <= 1.05;
- the runner's peak RSS in each quarter of its wall time (flat after warm-up is the target);
- Parquet bytes per million hits, and requests.parquet bytes per request;
- an honest extrapolation to 100,000 requests: the sending at the ratio measured, the suite's
  load and expansion as measured at 100,000 (a child process), the rest (imports, preflight,
  finish) grown in proportion to the hits (an upper bound); memory = the measured peak + what
  the suite and its plan hold at 100,000 - what they hold at N.

N = 2,000 by default (10 s at the floor); `VLBENCH_BENCH_SCALE=10` gives the 20,000 of issue 12.

Run: .venv/bin/python bench/bench_scale.py [--requests N] [--rate 200]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from _load import ROOT, Child, local_server, run_vlbench, scale, serve_workers, write_fts_suite

QUERIES_FILE = ROOT / "queries" / "demo-queries.tsv"
BIG = 100_000


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
    retries = {"max_attempts": 3, "backoff_s": 0.1, "max_backoff_s": 2}
    return write_fts_suite(
        queries, name, rate, base_url, dataset, {"timeout_s": 30, "retries": retries}
    )


_PLAN_MEMORY = """
import gc, sys, time
import psutil
from runner.plan import expand
from runner.suite import load_suite
import runner.cli  # the imports a run has anyway
gc.collect()
before, started = psutil.Process().memory_info().rss, time.perf_counter()
plan = expand(load_suite(sys.argv[1]))
seconds = time.perf_counter() - started
print(len(plan.specs), (psutil.Process().memory_info().rss - before) / 1e6, seconds)
"""


def plan_cost(suite: Path) -> tuple[int, float, float]:
    """Requests of `suite`, the MB its loaded suite and plan hold, and the seconds they took."""
    done = subprocess.run(
        [sys.executable, "-c", _PLAN_MEMORY, str(suite)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    count, mb, seconds = done.stdout.split()
    return int(count), float(mb), float(seconds)


def send_span(run_dir: Path) -> tuple[float, float]:
    """Seconds from the first request sent to the last (`sent_at`), and the p50 latency in ms."""
    table = pq.read_table(run_dir / "requests.parquet", columns=["sent_at", "latency_ms"])
    times = sorted(t.timestamp() for t in table.column("sent_at").to_pylist())
    return float(times[-1] - times[0]), statistics.median(table.column("latency_ms").to_pylist())


def report(
    child: Child,
    n: int,
    rate: float,
    workers: int,
    small: tuple[float, float],
    big: tuple[float, float],
) -> None:
    """Print the figures; `small` and `big` are (MB, seconds) of the suite and plan at N, 100k."""
    run_dir = child.run_dir
    manifest = json.loads((run_dir / "manifest.json").read_text())
    hits = int(manifest["counts"]["hits"])
    floor = n / rate
    span, latency = send_span(run_dir)
    span += 1 / rate
    hits_bytes = (run_dir / "hits.parquet").stat().st_size
    req_bytes = (run_dir / "requests.parquet").stat().st_size
    server = f"vlbench serve, {workers} worker{'s' * (workers > 1)}"
    print(f"suite: {n} fts requests, first page each, {rate:g}/s ({server}); floor {floor:.1f} s")
    print(f"status {manifest['status']}, {hits} hits ({hits / n:.0f} a request)")
    print(f"wall / floor, whole process:   {child.wall_s / floor:.3f}  ({child.wall_s:.1f} s)")
    print(
        f"wall / floor, sending:         {span / floor:.3f}  ({span:.1f} s)   target <= 1.05; "
        f"server p50 latency {latency:.1f} ms (32 in flight: above 160 ms the server bounds R)"
    )
    quarters = child.quarters()
    print(
        "peak RSS by quarter of the run: "
        + ", ".join(f"Q{i}: {mb:.0f} MB" for i, mb in enumerate(quarters, 1))
        + f"   (Q3 / Q2 {quarters[2] / quarters[1]:.2f}: flat after warm-up; Q4 holds the finish)"
    )
    per_million = hits_bytes / hits * 1e6 if hits else float("nan")
    print(
        f"Parquet: hits.parquet {per_million / 1e6:.1f} MB per million hits; "
        f"requests.parquet {req_bytes / n:.0f} B per request"
    )
    rest = child.wall_s - span  # start-up, plan, preflight, finish
    # At 100k: the sending at the ratio measured here; the plan as measured at 100k; the rest
    # (imports, preflight, finish) taken to grow with the hits: an upper bound for the imports.
    rest_big = (rest - small[1]) * BIG / n + big[1]
    wall_big = span / floor * BIG / rate + rest_big
    print(f"extrapolated to {BIG} requests of this kind at {rate:g}/s:")
    print(
        f"  wall <= {wall_big / 60:.1f} min, {wall_big / (BIG / rate):.3f} x its floor: sending "
        f"at the ratio measured here, the plan as measured at {BIG} ({big[1]:.1f} s), the rest "
        f"({rest - small[1]:.1f} s here: imports, preflight, finish) grown with the hits"
    )
    print(
        f"  peak RSS ~ {child.peak_mb + big[0] - small[0]:.0f} MB = the peak here + what the "
        f"suite and its plan hold at {BIG} ({big[0]:.0f} MB) - at {n} ({small[0]:.0f} MB); the "
        "store streams rows to Parquet, so the rest does not grow with the run"
    )
    print(f"  hits.parquet ~ {per_million * hits / n * BIG / 1e12:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=int(2000 * scale()))
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    n, rate = args.requests, args.rate
    workers = serve_workers()
    with local_server(workers) as (base_url, dataset, _):
        with tempfile.TemporaryDirectory(prefix="vlbench-bench-scale-") as scratch:
            folder = Path(scratch)
            suite = write_suite(folder, "scale", n, rate, base_url, dataset)
            child = run_vlbench(
                ["run", str(suite), "--out", str(folder / "runs"), "-q", "--no-report"]
            )
            big = write_suite(folder, "scale-big", BIG, rate, base_url, dataset)
            _, small_mb, small_s = plan_cost(suite)
            planned, big_mb, big_s = plan_cost(big)
            if planned != BIG:
                raise RuntimeError(f"the {BIG} suite expanded to {planned} requests")
            report(child, n, rate, workers, (small_mb, small_s), (big_mb, big_s))


if __name__ == "__main__":
    main()
