"""Reports of a run: `summary.json`, `report.md` and a self-contained `report.html` with plots."""

from __future__ import annotations

from runner.report.write import ReportPaths, write_report

__all__ = ["ReportPaths", "write_report"]
