"""The report's quality sections: confidence intervals, the hybrid what-if, cut-off advice, and
for a comparison the noise floor and the score shift. `quality` gathers, `render` and `page`
format, `plots` draws."""

from __future__ import annotations

from runner.report.sections.quality import Quality, QualityOptions, gather_quality

__all__ = ["Quality", "QualityOptions", "gather_quality"]
