"""vlbench: run query suites against the Explore API, store every hit, measure search quality.

The public API, importable from here (`from runner import load_suite, run_suite`):

    load_suite, expand           a suite file, and the requests it makes
    run_suite                    run it against the API or the embedded server (async)
    evaluate_run, report_run     measure a run on disk, and write its report
    compare_run_dirs             two runs, with paired significance
    gather_quality               a run's intervals, fusions and cut-off advice (the report's)
    load_history                 a suite's measures over every night, and the nights that moved
    export_run, merge_runs       matched media IDs; the runs of shards joined into one
    diagnose_url                 `vlbench doctor`: probe an API and judge its answers (async)
    serve_in_background          the local Explore server, in the running event loop
    import_dataset               a served dataset from JSON Lines, CSV or Parquet

Names are imported on first use, so `import runner` (and every `vlbench` command) loads only
what it needs: evaluation and reports pull in scipy and matplotlib. A type checker reads the
imports under `TYPE_CHECKING` below, so callers get every name's real type.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runner.version import __version__

if TYPE_CHECKING:
    from runner.api.doctor import diagnose_url
    from runner.evaluate.compare.runs import compare_run_dirs
    from runner.evaluate.history import load_history
    from runner.evaluate.run import evaluate_run
    from runner.execute import run_suite
    from runner.export.ids import export_run
    from runner.plan import expand
    from runner.report.sections.quality import gather_quality
    from runner.report.write import report_run
    from runner.server.dataset import import_dataset
    from runner.server.lifecycle import serve_in_background
    from runner.store.merge import merge_runs
    from runner.suite.load import load_suite

# Where each public name lives: the module that defines it (or its package's front, for the
# scheduler, whose modules are private).
_SOURCES = {
    "load_suite": "runner.suite.load",
    "expand": "runner.plan",
    "run_suite": "runner.execute",
    "evaluate_run": "runner.evaluate.run",
    "report_run": "runner.report.write",
    "compare_run_dirs": "runner.evaluate.compare.runs",
    "gather_quality": "runner.report.sections.quality",
    "load_history": "runner.evaluate.history",
    "export_run": "runner.export.ids",
    "merge_runs": "runner.store.merge",
    "diagnose_url": "runner.api.doctor",
    "serve_in_background": "runner.server.lifecycle",
    "import_dataset": "runner.server.dataset",
}

__all__ = [
    "__version__",
    "compare_run_dirs",
    "diagnose_url",
    "evaluate_run",
    "expand",
    "export_run",
    "gather_quality",
    "import_dataset",
    "load_history",
    "load_suite",
    "merge_runs",
    "report_run",
    "run_suite",
    "serve_in_background",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for (PEP 562)."""
    if name not in _SOURCES:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    return getattr(importlib.import_module(_SOURCES[name]), name)
