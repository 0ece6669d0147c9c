"""What the end-to-end benches share: their scale, a CPU hog, `vlbench serve` and `vlbench run`.

- `scale()`: `VLBENCH_BENCH_SCALE` (default 1: a short run for `make bench`; 10 or more for the
  figures the README quotes), a multiplier of durations and request counts.
- `cpu_hog()`: a child process spinning on one core for the `with` block (a busy machine).
- `local_server()`: `vlbench serve` over the demo dataset without auth, in a child process, with
  `--workers 2` when this branch's server has that option (`serve_workers()` says which).
- `write_fts_suite(...)`: a suite of one full-text mode, one page a query, over a queries file.
- `run_vlbench(...)`: `vlbench run` in a child process, its wall time and its RSS sampled every
  `sample_s` (so that memory can be read at each quarter of a run), and its stdout.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the venv

from runner.server.lifecycle import start_serve_process

ROOT = Path(__file__).resolve().parent.parent
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("VL_")}
_VLBENCH = [sys.executable, "-c", "from runner.cli import main; main()"]
# `vlbench` that prints its own peak RSS on stderr at exit: VmHWM, the high-water mark of this
# program's memory (ru_maxrss would also count the parent's pages the child was forked with).
_MEASURED = [
    sys.executable,
    "-c",
    "import atexit, re, sys\n"
    "def peak():\n"
    "    status = open('/proc/self/status').read()\n"
    "    print('VMHWM_KB=' + re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\n"
    "atexit.register(peak)\n"
    "from runner.cli import main\n"
    "sys.argv[0] = 'vlbench'\n"
    "main()\n",
]


def scale() -> float:
    """The benches' size multiplier (`VLBENCH_BENCH_SCALE`, default 1)."""
    return float(os.environ.get("VLBENCH_BENCH_SCALE", "1"))


@contextlib.contextmanager
def cpu_hog() -> Iterator[int]:
    """A child process that keeps one core busy until the block ends; yields its pid."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield hog.pid
    finally:
        hog.terminate()
        hog.wait(timeout=10)


def serve_workers() -> int:
    """2 when `vlbench serve --workers` exists on this branch, else 1."""
    done = subprocess.run(
        [*_VLBENCH, "serve", "--help"], capture_output=True, text=True, env=CLEAN_ENV, check=False
    )
    return 2 if "--workers" in done.stdout else 1


@contextlib.contextmanager
def local_server(workers: int) -> Iterator[tuple[str, str, list[int]]]:
    """`vlbench serve` (demo, no auth); yields base URL, dataset id and the server's pids."""
    args = ["--dataset", "demo", "--no-auth"] + (["--workers", str(workers)] if workers > 1 else [])
    env = {**CLEAN_ENV, "OPENBLAS_NUM_THREADS": "1"}
    server = start_serve_process(args, cwd=ROOT, env=env)
    try:
        process = psutil.Process(server.process.pid)
        pids = [process.pid] + [child.pid for child in process.children(recursive=True)]
        yield server.base_url, server.dataset_id, pids
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)


@dataclass(frozen=True, slots=True)
class Child:
    """A finished `vlbench run`: wall time, RSS samples (seconds since start, MB), stdout, and
    its true peak RSS (its VmHWM at exit, which no sample can miss)."""

    wall_s: float
    rss: list[tuple[float, float]]
    stdout: str
    maxrss_mb: float

    @property
    def peak_mb(self) -> float:
        return self.maxrss_mb

    def peak_within(self, start: float, end: float) -> float:
        """The highest RSS sampled between these fractions of the run's wall time."""
        times = [t for t, _ in self.rss]
        first = bisect.bisect_left(times, start * self.wall_s)
        last = bisect.bisect_right(times, end * self.wall_s)
        return max((mb for _, mb in self.rss[first:last]), default=float("nan"))

    def quarters(self) -> list[float]:
        """The peak RSS sampled within each quarter of the run (the last one holds the finish)."""
        return [self.peak_within(q / 4, (q + 1) / 4) for q in range(4)]

    @property
    def run_dir(self) -> Path:
        match = re.search(r"^run_dir: (.+)$", self.stdout, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no run_dir in:\n{self.stdout}")
        return Path(match.group(1).strip())


def run_vlbench(args: Sequence[str], *, sample_s: float = 0.25) -> Child:
    """`vlbench ARGS` in a child process, its RSS sampled every `sample_s`; raises if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [*_MEASURED, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=CLEAN_ENV,
    )
    watched = psutil.Process(process.pid)
    samples: list[tuple[float, float]] = []
    while process.poll() is None:  # vlbench run -q writes little: the pipes do not fill
        with contextlib.suppress(psutil.Error):
            samples.append((time.perf_counter() - started, watched.memory_info().rss / 1e6))
        time.sleep(sample_s)
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"vlbench {' '.join(args)} failed:\n{stdout}\n{stderr}")
    match = re.search(r"VMHWM_KB=(\d+)", stderr)
    peak = int(match.group(1)) * 1024 / 1e6 if match else float("nan")
    return Child(wall, samples, stdout, peak)


def write_fts_suite(
    queries: Path,
    name: str,
    rate: float,
    base_url: str,
    dataset: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """`<name>.yaml` beside `queries`: fts only, one page a query, 32 at once, at `rate`/s.

    `extra` adds or overrides suite keys (a bench's timeouts and retries).
    """
    suite = {
        "name": name,
        "base_url": base_url,
        "dataset_id": dataset,
        "rate_limit": rate,
        "concurrency": 32,
        "pagination": {"max_pages": 1},
        "modes": ["fts"],
        "queries_file": str(queries),
        **(extra or {}),
    }
    path = queries.parent / f"{name}.yaml"
    path.write_text(json.dumps(suite), encoding="utf-8")
    return path
