"""The raters section's plot: for each pair of raters, how often one gave grade i and the other j.

Drawn like the report's own plots (`runner.report.plots`: matplotlib without pyplot, text as
text, ids salted per plot), so it sits in report.html as inline SVG.
"""

from __future__ import annotations

from itertools import combinations
from typing import Final

import matplotlib
import polars as pl

from runner.judge.labels import GRADES

# The report's drawing helpers: one look for every plot of the page.
from runner.report.plots import STYLE, axes_row, new_figure, to_svg

__all__ = ["grade_matrices"]

_MAX_PAIRS: Final = 3


def _pairs(standing: pl.DataFrame) -> list[tuple[str, str, pl.DataFrame]]:
    """Rater pairs with the items both graded, the pairs sharing most first."""
    out = []
    raters = sorted(set(standing["rater"].to_list()))
    for a, b in combinations(raters, 2):
        both = (
            standing.filter(pl.col("rater") == a)
            .join(standing.filter(pl.col("rater") == b), on=["query_id", "media_id"])
            .select(pl.col("grade").alias("a"), pl.col("grade_right").alias("b"))
        )
        if both.height:
            out.append((a, b, both))
    out.sort(key=lambda pair: (-pair[2].height, pair[0], pair[1]))
    return out[:_MAX_PAIRS]


def grade_matrices(standing: pl.DataFrame) -> str | None:
    """One heat map per pair of raters (at most three): counts of (grade by A, grade by B)."""
    pairs = _pairs(standing)
    if not pairs:
        return None
    title = "Grades given to the same media by two raters (the diagonal is agreement)"
    fig = new_figure(max(4.0, 3.4 * len(pairs)), 3.4)
    axes = axes_row(fig, len(pairs))
    with matplotlib.rc_context(STYLE):
        for ax, (a, b, both) in zip(axes, pairs, strict=True):
            counts = {(x, y): n for x, y, n in both.group_by("a", "b").len().rows()}
            top = max(counts.values())
            grid = [[counts.get((x, y), 0) for y in GRADES] for x in GRADES]
            ax.pcolormesh(grid, vmin=0, vmax=top, cmap="Blues", edgecolors="white")
            for i, x in enumerate(GRADES):
                for j, y in enumerate(GRADES):
                    n = counts.get((x, y), 0)
                    colour = "white" if n > top / 2 else "black"
                    ax.text(j + 0.5, i + 0.5, str(n), ha="center", va="center", color=colour)
            ticks = [g + 0.5 for g in range(len(GRADES))]
            ax.set_xticks(ticks, [str(g) for g in GRADES])
            ax.set_yticks(ticks, [str(g) for g in GRADES])
            ax.set_xlabel(f"grade by {b}")
            ax.set_ylabel(f"grade by {a}")
            ax.set_title(f"{a} vs {b} ({both.height} media)")
            ax.grid(False)
        fig.suptitle(title)
    return to_svg(fig, "raters", title)
