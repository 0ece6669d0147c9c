"""Peak memory of storing a run of one million hits: RunWriter against a collect-then-write peer.

    .venv/bin/python bench/bench_memory.py [--hits 1000000] [--hits-per-unit 100] [--requests N]

Each contender runs in its own fresh process, the two side by side (so one's memory cannot
flatter or spoil the other's), and both are fed the same units: per request unit, a list of
request-row dicts and a list of hit-row dicts in the schemas of `runner/schema.py` (the slowest
input the writer takes; the scheduler hands it column-built record batches).

- `runner`: `RunWriter.record(...)` per unit, then `finish("complete")`.
- `naive`: append every row to two Python lists, then `pl.DataFrame(rows).write_parquet(...)`.

Peak RSS is the process's `ru_maxrss`; `base` is its RSS after imports, before any row. The
writer's peak is also sampled after each quarter of the units, to show it does not grow with the
run. CPU seconds are given beside wall seconds because the machine may be shared.

Then the runner end to end: `vlbench run` of N requests (10,000, x VLBENCH_BENCH_SCALE: 10 gives
the 100,000 of issue 12) against a server that is never the limit (`bench/_canned.py`: real
pages of ~100 hits, fixed), no rate limit, its RSS sampled: the peak in each quarter of the run
against the first quarter's (flat after warm-up: the plan holds a few numbers a spec, the store
streams to Parquet), and against the target of 400 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

Unit = tuple[list[dict[str, Any]], list[dict[str, Any]]]
DATASET_IMAGES = 50_000
CHECKPOINTS = 4  # the writer's peak is sampled after each quarter of the units, to show it is flat


def units(n_hits: int, hits_per_unit: int) -> Iterator[Unit]:
    """`n_hits // hits_per_unit` units, each one request page and its hits, as dict rows.

    Media ids are drawn from a dataset of `DATASET_IMAGES` images, as a real sweep returns the
    same images again and again (that is what Parquet's dictionary encoding feeds on).
    """
    from runner.store.synthetic import synthetic_unit

    requests, hits = synthetic_unit("template", hits_per_page=hits_per_unit)
    request_rows, hit_rows = requests.to_pylist(), hits.to_pylist()
    for i in range(n_hits // hits_per_unit):
        key = f"key-{i:08d}"
        yield (
            [dict(row, request_key=key) for row in request_rows],
            [
                dict(row, request_key=key, media_id=f"m{(i * 37 + j * 7919) % DATASET_IMAGES:06d}")
                for j, row in enumerate(hit_rows)
            ],
        )


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_writer(out: Path, n_hits: int, hits_per_unit: int, peaks: list[int]) -> Path:
    from runner.store import RunWriter

    n_units = n_hits // hits_per_unit
    writer = RunWriter.create(
        out,
        suite_name="bench",
        suite_hash="bench",
        base_url=None,
        dataset_id=None,
        tool_version="bench",
        requests_planned=n_units,
    )
    for i, (request_rows, hit_rows) in enumerate(units(n_hits, hits_per_unit), start=1):
        writer.record(request_rows, hit_rows)
        if i % max(n_units // CHECKPOINTS, 1) == 0:
            peaks.append(peak_rss())
    return writer.finish("complete").hits_path


def run_naive(out: Path, n_hits: int, hits_per_unit: int, peaks: list[int]) -> Path:
    import polars as pl

    all_requests: list[dict[str, Any]] = []
    all_hits: list[dict[str, Any]] = []
    for request_rows, hit_rows in units(n_hits, hits_per_unit):
        all_requests.extend(request_rows)
        all_hits.extend(hit_rows)
    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(all_requests).write_parquet(out / "requests.parquet")
    pl.DataFrame(all_hits).write_parquet(out / "hits.parquet")
    return out / "hits.parquet"


def child(kind: str, n_hits: int, hits_per_unit: int) -> None:
    """Run one contender in this process and print its figures as JSON."""
    import polars  # noqa: F401 - both contenders import it; count it in `base`

    import runner.store  # noqa: F401

    next(units(hits_per_unit, hits_per_unit))  # warm the generator's imports into `base`
    base = peak_rss()  # after imports: nothing has been freed yet, so this is the RSS now
    peaks: list[int] = []
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        contender = run_writer if kind == "runner" else run_naive
        hits_path = contender(Path(tmp), n_hits, hits_per_unit, peaks)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        size = hits_path.stat().st_size
    figures = {"peak": peak_rss(), "base": base, "seconds": seconds, "cpu": cpu, "bytes": size}
    print(json.dumps({**figures, "checkpoints": peaks}))


def measure(kinds: list[str], n_hits: int, hits_per_unit: int) -> dict[str, dict[str, Any]]:
    """Run each contender in its own process, side by side (the machine has two cores)."""
    procs = {}
    for kind in kinds:
        args = [sys.executable, __file__, "--child", kind, "--hits", str(n_hits)]
        args += ["--hits-per-unit", str(hits_per_unit)]
        procs[kind] = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    figures = {}
    for kind, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{kind} failed with exit code {proc.returncode}")
        figures[kind] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=1_000_000)
    parser.add_argument("--hits-per-unit", type=int, default=100)
    parser.add_argument("--child", choices=["runner", "naive"])
    opts = parser.parse_args()
    if opts.child:
        child(opts.child, opts.hits, opts.hits_per_unit)
        return

    mb = 1024 * 1024
    both = measure(["runner", "naive"], opts.hits, opts.hits_per_unit)
    ours, naive = both["runner"], both["naive"]
    units_n = opts.hits // opts.hits_per_unit
    print(f"store {opts.hits:,} hits ({units_n:,} units x {opts.hits_per_unit} hits)")
    header = f"{'contender':<20}{'peak MB':>9}{'base MB':>9}{'peak-base':>11}"
    print(header + f"{'wall s':>8}{'cpu s':>8}{'MB/M hits':>11}")
    for name, f in (("RunWriter", ours), ("naive list+polars", naive)):
        per_million = f["bytes"] / opts.hits * 1_000_000 / mb
        print(
            f"{name:<20}{f['peak'] / mb:>9.0f}{f['base'] / mb:>9.0f}"
            f"{(f['peak'] - f['base']) / mb:>11.0f}{f['seconds']:>8.1f}{f['cpu']:>8.1f}"
            f"{per_million:>11.2f}"
        )
    quarters = " ".join(f"{p / mb:.0f}" for p in ours["checkpoints"])
    print(
        f"RunWriter peak MB after each quarter of the units: {quarters}; after finish: "
        f"{ours['peak'] / mb:.0f}"
    )
    print(f"peak ratio naive / RunWriter: {naive['peak'] / ours['peak']:.2f}")
    print(f"cpu ratio RunWriter / naive: {ours['cpu'] / naive['cpu']:.2f}")
    verdict = "meets" if ours["peak"] < 300 * mb else "MISSES"
    print(f"target RunWriter peak < 300 MB: {verdict} ({ours['peak'] / mb:.0f} MB)")


def runner_end_to_end(n: int) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from _canned import CannedServer, canned_pages
    from _load import run_vlbench

    with tempfile.TemporaryDirectory() as tmp, CannedServer(canned_pages(8)) as server:
        folder = Path(tmp)
        queries = folder / "queries.tsv"
        queries.write_text("".join(f"q{i}\tquery number {i}\n" for i in range(n)))
        suite = {
            "name": "memory",
            "base_url": server.base_url,
            "dataset_id": server.dataset_id,
            "rate_limit": "unlimited",
            "concurrency": 16,
            "modes": ["fts"],
            "queries_file": str(queries),
        }
        (folder / "suite.yaml").write_text(json.dumps(suite))
        child = run_vlbench(
            ["run", str(folder / "suite.yaml"), "--out", str(folder / "runs"), "-q", "--no-report"]
        )
        hits = json.loads((child.run_dir / "manifest.json").read_text())["counts"]["hits"]
    quarters = child.quarters()
    print(
        f"\nvlbench run, {n:,} requests ({hits:,} hits) against a canned server, no rate limit: "
        f"{child.wall_s:.0f} s"
    )
    print(
        "runner peak RSS by quarter of the run: "
        + ", ".join(f"Q{i}: {mb:.0f} MB" for i, mb in enumerate(quarters, 1))
        + f"; Q3 / Q2 {quarters[2] / quarters[1]:.2f} (flat after warm-up), Q4 holds the finish"
    )
    verdict = "meets" if child.peak_mb < 400 else "MISSES"
    print(f"target runner peak < 400 MB: {verdict} ({child.peak_mb:.0f} MB)")


if __name__ == "__main__":
    main()
    if "--child" not in sys.argv and "--no-runner" not in sys.argv:
        from _load import scale

        runner_end_to_end(int(10_000 * scale()))
