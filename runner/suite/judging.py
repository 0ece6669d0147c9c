"""The judgments a suite gathers from its files: grades that disagree, and ids it does not have.

    rows = merge_grades(judged, "error")    # one per (query, kind, doc); SuiteError on a clash
    note = foreign_queries(judged, query_ids)  # a warning line, or None

Each `Judged` row carries the file it came from (as `display` shows it) and its line there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

from runner.errors import SuiteError
from runner.suite.fields import Judgment

__all__ = ["OnConflict", "Judged", "foreign_queries", "merge_grades"]

OnConflict = Literal["error", "max", "min", "last"]


class Judged(NamedTuple):
    """A judgment and the file (as shown to the user) it was read from."""

    where: str
    judgment: Judgment


def merge_grades(rows: Iterable[Judged], on_conflict: OnConflict) -> list[Judgment]:
    """One judgment per (query, kind, doc), in file order of its first line.

    The same grade given twice is one judgment. Different grades are a `SuiteError` at the
    later line naming the earlier one, unless `on_conflict` says which grade stands: the
    highest (`max`), the lowest (`min`) or the one read last (`last`: files in the suite's
    order, lines in file order).
    """
    kept: dict[tuple[str, str, str], Judged] = {}
    for row in rows:
        j = row.judgment
        key = (j.query_id, j.kind, j.value)
        first = kept.get(key)
        if first is None or first.judgment.grade == j.grade:
            kept.setdefault(key, row)
            continue
        if on_conflict == "error":
            raise SuiteError(
                f"query {j.query_id!r}, {j.value}: graded {j.grade} here but "
                f"{first.judgment.grade} at {first.where}:{first.judgment.line}; set "
                "judgments.on_conflict (max, min or last) to say which grade stands",
                path=row.where,
                line=j.line,
                key="grade",
            )
        grades = (first.judgment.grade, j.grade)
        grade = {"max": max(grades), "min": min(grades), "last": j.grade}[on_conflict]
        if grade != first.judgment.grade:
            kept[key] = Judged(row.where, _regraded(first.judgment, grade, j))
    return [row.judgment for row in kept.values()]


def _regraded(first: Judgment, grade: int, by: Judgment) -> Judgment:
    # The first line's place in the order, the grade (and source) of the line that set it.
    return Judgment(first.query_id, first.kind, first.value, grade, by.source, by.line)


def foreign_queries(rows: Sequence[Judged], query_ids: set[str]) -> str | None:
    """A warning when judgments name query ids the suite does not have: count and first one."""
    foreign = [row for row in rows if row.judgment.query_id not in query_ids]
    if not foreign:
        return None
    first = foreign[0]
    ids = len({row.judgment.query_id for row in foreign})
    return (
        f"{first.where}:{first.judgment.line}: {len(foreign)} judgment line(s) name "
        f"{ids} query id(s) this suite does not have (the first: "
        f"{first.judgment.query_id!r}); they judge nothing here"
    )
