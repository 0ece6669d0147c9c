"""Extra report sections: features that live outside `runner/report/` add a section here.

A maker is a function `(run_dir, ev, extra_judgments) -> ExtraSection | None` (None: nothing to
show for this run), named in `MAKERS` as `"module:function"` and imported only when a report is
written. Each section is notes, plots (SVG, in report.html) and tables, so the HTML and Markdown
renderers format it as they format their own, and a JSON-ready `summary` that `summary.json`
holds under `extras.<key>`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from runner.evaluate.evaluation import Evaluation
from runner.report.table import Table

__all__ = ["MAKERS", "ExtraSection", "SectionMaker", "extra_sections"]


@dataclass(frozen=True, slots=True)
class ExtraSection:
    """One section: `key` is its HTML id and its key in summary.json."""

    key: str
    title: str
    notes: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()  # inline SVG (report.html only), e.g. from runner.report.plots
    tables: tuple[tuple[str, Table], ...] = ()  # (heading, or "" for none; table)
    summary: Mapping[str, Any] = field(default_factory=dict)


SectionMaker = Callable[[Path, Evaluation, Sequence[Path | str] | None], ExtraSection | None]

# In page order, after the report's own sections.
MAKERS: Final = ("runner.judge.section:agreement_section",)


def extra_sections(
    run_dir: Path, ev: Evaluation, extra_judgments: Sequence[Path | str] | None
) -> tuple[ExtraSection, ...]:
    """The extra sections that have something to show for this run."""
    out = []
    for spec in MAKERS:
        module, name = spec.split(":")
        maker: SectionMaker = getattr(importlib.import_module(module), name)
        section = maker(run_dir, ev, extra_judgments)
        if section is not None:
            out.append(section)
    return tuple(out)
