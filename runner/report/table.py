"""A table as plain text cells, and the cell formats every renderer shares.

A `Table` holds formatted strings (never markup) and, per cell, an optional mark the HTML
writer turns into a CSS class: "best" (the best setting of a measure), "up" / "down" (a
significant change for the better / worse), "warn" (something to look at). This module imports
nothing of the report, so that every part of it (content, sections, renderers) can use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["DASH", "DOWN", "UP", "Table", "fmt", "fmt_p", "interval", "make_table"]

DASH: Final = "–"
UP: Final = "▲"
DOWN: Final = "▼"


@dataclass(frozen=True, slots=True)
class Table:
    """Rows of formatted cells under headers; `marks` (if any) has the shape of `rows`."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: frozenset[int] = frozenset()  # columns aligned right
    marks: tuple[tuple[str, ...], ...] = ()  # same shape as rows; "" for no mark
    note: str = ""  # shown under the table (e.g. "12 more rows not shown")

    def mark(self, row: int, col: int) -> str:
        return self.marks[row][col] if self.marks else ""


def fmt(value: object, digits: int = 3) -> str:
    """A number for a table: ints as they are, floats to `digits` places, missing as a dash."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return DASH
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}f}"
    return str(value)


def fmt_p(value: float | None) -> str:
    """A p-value: three decimals, "<0.001" below that, a dash when there is none."""
    if value is None or math.isnan(value):
        return DASH
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def make_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: Sequence[int] = (),
    marks: Sequence[Sequence[str]] = (),
    limit: int | None = None,
) -> Table:
    note = ""
    if limit is not None and len(rows) > limit:
        note = f"{len(rows) - limit} more rows not shown (all of them are in summary.json)."
        rows, marks = rows[:limit], marks[:limit]
    return Table(
        headers=tuple(headers),
        rows=tuple(tuple(r) for r in rows),
        numeric=frozenset(numeric),
        marks=tuple(tuple(m) for m in marks),
        note=note,
    )


def interval(lo: float | None, hi: float | None, digits: int = 3) -> str:
    """A confidence interval as "[lo, hi]", a dash when either bound is missing."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return DASH
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"
