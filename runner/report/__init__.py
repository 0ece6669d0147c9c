"""Reports of a run: `summary.json`, `report.md` and a self-contained `report.html` with plots."""

from __future__ import annotations

from runner.report.write import (
    ComparisonReport,
    ReportPaths,
    compare_and_report,
    comparison_dir,
    report_run,
    write_report,
)

__all__ = [
    "ComparisonReport",
    "ReportPaths",
    "compare_and_report",
    "comparison_dir",
    "report_run",
    "write_report",
]
