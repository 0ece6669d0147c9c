"""vlbench: run query suites against the Explore API, store every hit, measure search quality.

The public API, importable from here (`from runner import load_suite, run_suite`):

    load_suite, expand           a suite file, and the requests it makes
    run_suite                    run it against the API or the embedded server (async)
    evaluate_run, report_run     measure a run on disk, and write its report
    compare_run_dirs             two runs, with paired significance
    export_run, merge_runs       matched media IDs; the runs of shards joined into one
    serve_in_background          the local Explore server, in the running event loop
    import_dataset               a served dataset from JSON Lines, CSV or Parquet

Names are imported on first use, so `import runner` (and every `vlbench` command) loads only
what it needs: evaluation and reports pull in scipy and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SOURCES = {
    "load_suite": "runner.suite",
    "expand": "runner.plan",
    "run_suite": "runner.execute",
    "evaluate_run": "runner.evaluate",
    "report_run": "runner.report",
    "compare_run_dirs": "runner.evaluate.compare",
    "export_run": "runner.export.ids",
    "merge_runs": "runner.store.merge",
    "serve_in_background": "runner.server.lifecycle",
    "import_dataset": "runner.server.dataset",
}

__all__ = ["__version__", *_SOURCES]


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for (PEP 562)."""
    if name not in _SOURCES:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    return getattr(importlib.import_module(_SOURCES[name]), name)
