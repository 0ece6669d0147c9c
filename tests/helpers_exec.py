"""Helpers of the runner's tests: small suites written to a folder, runs, and their rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import polars as pl

from runner.api.auth import DEMO_API_KEY, DEMO_API_SECRET
from runner.execute import RunControl, RunResult, run_suite
from runner.plan import Plan
from runner.server.lifecycle import ServerThread
from runner.store import RunWriter, scan_hits, scan_requests
from runner.suite import Suite, load_suite, suite_hash

__all__ = [
    "DEMO_ENV",
    "QUERIES",
    "hit_rows",
    "request_rows",
    "run_sync",
    "write_suite",
]

# The environment a run against a test server reads its credentials from.
DEMO_ENV: Final = {"VL_API_KEY": DEMO_API_KEY, "VL_API_SECRET": DEMO_API_SECRET}

# Queries over the demo dataset; two share their text (one wire request, fanned out).
QUERIES: Final = (
    {"id": "dog-beach", "text": "a dog on the beach"},
    {"id": "dog-beach-again", "text": "a dog on the beach"},
    {"id": "red-bicycle", "text": "red bicycle"},
    {"id": "horse", "text": "a man riding a horse"},
    {"id": "pizza", "text": "pizza on a table"},
    {"id": "cat-couch", "text": "a cat sleeping on a couch"},
    {"id": "skiing", "text": "people skiing down a snowy mountain"},
    {"id": "train", "text": "a train at the station"},
    {"id": "bus", "text": "a bus on a city street"},
    {"id": "surfing", "text": "a person surfing a wave"},
    {"id": "airplane", "text": "an airplane in the sky"},
)


def write_suite(
    folder: Path,
    server: ServerThread | None,
    *,
    name: str = "exec-test",
    queries: Sequence[Mapping[str, Any]] = QUERIES,
    **settings: Any,
) -> Path:
    """A suite file for `server` (None: the embedded server); `settings` override the defaults.

    Defaults are fast: 2000 requests/s, 4 workers, tiny backoffs, fts only, 3 pages a request.
    """
    suite: dict[str, Any] = {
        "name": name,
        "rate_limit": 2000,
        "concurrency": 4,
        "timeout_s": 10,
        "retries": {"max_attempts": 10, "backoff_s": 0.005, "max_backoff_s": 0.05},
        "pagination": {"max_pages": 3},
        "modes": ["fts"],
        "queries": [dict(q) for q in queries],
    }
    if server is not None:
        suite["base_url"] = server.base_url
        suite["dataset_id"] = server.dataset_id
    suite.update(settings)
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(suite, indent=2), encoding="utf-8")  # JSON is YAML
    return path


def run_sync(
    suite_path: Path,
    out: Path,
    *,
    environ: Mapping[str, str] | None = None,
    control: RunControl | None = None,
    **kwargs: Any,
) -> RunResult:
    """`run_suite` of a suite file in a fresh event loop (test servers run in their own threads)."""
    suite = load_suite(suite_path)
    env = DEMO_ENV if environ is None else environ
    return asyncio.run(run_suite(suite, out=out, environ=env, control=control, **kwargs))


def hit_rows(run_dir: Path) -> list[tuple[Any, ...]]:
    """Every hit row of a run, as sortable tuples, in (request key, rank) order."""
    frame = scan_hits(run_dir).collect().sort("request_key", "rank")
    return [tuple(json.dumps(v) if isinstance(v, list) else v for v in row) for row in frame.rows()]


def request_rows(run_dir: Path) -> pl.DataFrame:
    """The request rows of a run in (request key, page) order."""
    return scan_requests(run_dir).collect().sort("request_key", "page")


def new_writer(folder: Path, suite: Suite, plan: Plan, base_url: str) -> RunWriter:
    """A new run of `suite` under `folder / "reports"`, for `run_plan` without the preflight."""
    return RunWriter.create(
        folder / "reports",
        suite_name=suite.name,
        suite_hash=suite_hash(suite),
        base_url=base_url,
        dataset_id=suite.dataset_id,
        tool_version="test",
        requests_planned=len(plan),
    )
