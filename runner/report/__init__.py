"""Reports of a run: `summary.json`, `report.md` and a self-contained `report.html` with plots."""

from __future__ import annotations

from runner.report.write import ReportPaths, report_run, write_report

__all__ = ["ReportPaths", "report_run", "write_report"]
