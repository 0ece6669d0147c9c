"""The report's plots, drawn with matplotlib (no pyplot, no global state) as inline SVG text.

Each function takes Evaluation frames and returns one `<svg>` element as a string, or None when
there is nothing to draw (no judgments, one mode only, ...). Text stays text (`svg.fonttype`
"none"), ids are salted per plot so several plots live in one HTML page, and the RDF metadata
block (with its purl.org URLs) is dropped: the SVG references nothing outside itself.
Every mode has the same colour in every plot: `mode_colours`. Other pages (`report.history`)
draw in the same style with `new_figure`, `axes_column` and `to_svg`.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import matplotlib
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.typing import RcKeyType

__all__ = [
    "RELEVANCE_COLOURS",
    "STYLE",
    "axes_column",
    "axes_row",
    "new_figure",
    "to_svg",
    "comparison_deltas",
    "hits_per_setting",
    "mode_colours",
    "overlap_heatmaps",
    "pr_curves",
    "score_histograms",
]

_PALETTE: Final = (
    "#1f77b4",
    "#ff7f0e",
    "#9467bd",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#7f7f7f",
)
RELEVANCE_COLOURS: Final = {
    "relevant": "#2ca02c",
    "non_relevant": "#d62728",
    "unjudged": "#9e9e9e",
}
_RELEVANCE_LABELS: Final = {
    "relevant": "relevant",
    "non_relevant": "non-relevant",
    "unjudged": "unjudged",
}
STYLE: Final[dict[RcKeyType, Any]] = {
    "svg.fonttype": "none",
    "text.parse_math": False,  # "$" in a setting or mode name is text, not TeX
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
_LABEL_OFFSETS: Final = ((5, 5), (5, -11), (-5, 5), (-5, -11))
_METADATA: Final = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def mode_colours(modes: Sequence[str]) -> dict[str, str]:
    """A colour per mode (or any label), by sorted order: the same run gives the same colours."""
    return {mode: _PALETTE[i % len(_PALETTE)] for i, mode in enumerate(sorted(modes))}


def to_svg(fig: Figure, name: str, title: str, *, tight: bool = False) -> str:
    """Render `fig` as an `<svg>` element with ids unique to `name` and an accessible title.

    Constrained layout fits most figures; `tight` adds a second pass (text extents are slow)
    for those with a colour bar, whose label it would otherwise clip.
    """
    buf = io.StringIO()
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": f"vlbench-{name}"}):
        fig.savefig(
            buf, format="svg", metadata={"Date": None}, bbox_inches="tight" if tight else None
        )
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = _METADATA.sub("", text)
    label = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return text.replace("<svg ", f'<svg class="plot" role="img" aria-label="{label}" ', 1)


def new_figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(width, height), layout="constrained")


def axes_row(fig: Figure, n: int) -> list[Axes]:
    with matplotlib.rc_context(STYLE):
        axes = fig.subplots(1, n, squeeze=False)
    return list(axes[0])


def axes_column(fig: Figure, n: int) -> list[Axes]:
    """`n` panels stacked in the report's style, sharing their x axis."""
    with matplotlib.rc_context(STYLE):
        axes = fig.subplots(n, 1, squeeze=False, sharex=True)
    return list(axes[:, 0])


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("cutoff", "setting", nulls_last=False)


def pr_curves(
    sweep: pl.DataFrame, operating_points: pl.DataFrame, colours: Mapping[str, str]
) -> str | None:
    """Precision against recall over each mode's threshold grid (media), operating points starred.

    One line per mode, a point per setting (labelled), from the strictest cut-off to the loosest.
    """
    media = sweep.filter((pl.col("unit") == "media") & pl.col("precision").is_not_null())
    if media.height == 0:
        return None
    title = "Precision–recall across thresholds (media)"
    fig = new_figure(6.4, 4.4)
    (ax,) = axes_row(fig, 1)
    with matplotlib.rc_context(STYLE):
        for i, mode in enumerate(sorted(set(media["mode"].to_list()))):
            part = _sorted(media.filter(pl.col("mode") == mode))
            colour = colours.get(mode, "#333333")
            ax.plot(part["recall"], part["precision"], marker="o", color=colour, label=mode)
            # Modes often share points (same cut-offs): label each mode on its own side.
            offset = _LABEL_OFFSETS[i % len(_LABEL_OFFSETS)]
            for row in part.iter_rows(named=True):
                ax.annotate(
                    row["setting"],
                    (row["recall"], row["precision"]),
                    textcoords="offset points",
                    xytext=offset,
                    ha="left" if offset[0] >= 0 else "right",
                    fontsize=7,
                    color=colour,
                )
        points = operating_points.filter(
            (pl.col("unit") == "media") & pl.col("setting").is_not_null()
        )
        objective = "F1"
        for row in points.iter_rows(named=True):
            objective = str(row["objective"])
            ax.scatter(
                [row["recall"]],
                [row["precision"]],
                marker="*",
                s=220,
                color=colours.get(row["mode"], "#333333"),
                edgecolors="black",
                linewidths=0.8,
                zorder=5,
            )
        handles, labels = ax.get_legend_handles_labels()
        star = Line2D([], [], marker="*", color="black", linestyle="", markersize=11)
        ax.legend([*handles, star], [*labels, f"operating point (max {objective})"], loc="best")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("Recall (mean over judged queries)")
        ax.set_ylabel("Precision (mean over judged queries)")
        ax.set_title(title)
    return to_svg(fig, "pr", title)


def hits_per_setting(sweep: pl.DataFrame, colours: Mapping[str, str]) -> str | None:
    """Bars of the number of media returned at each setting, one panel per mode."""
    media = sweep.filter(pl.col("unit") == "media")
    if media.height == 0:
        return None
    modes = sorted(set(media["mode"].to_list()))
    sizes = [media.filter(pl.col("mode") == m).height for m in modes]
    title = "Hits returned per setting (media, all queries)"
    # Panels as wide as their number of settings, so bars and labels keep one width.
    fig = new_figure(min(11.0, max(4.0, 1.2 * len(modes) + 0.75 * sum(sizes))), 3.6)
    with matplotlib.rc_context(STYLE):
        axes = fig.subplots(
            1, len(modes), squeeze=False, width_ratios=[max(s, 1.5) for s in sizes]
        )[0]
        for ax, mode in zip(axes, modes, strict=True):
            part = _sorted(media.filter(pl.col("mode") == mode))
            labels = part["setting"].to_list()
            counts = part["hits"].to_list()
            bars = ax.bar(range(len(labels)), counts, color=colours.get(mode, "#333333"))
            ax.bar_label(bars, [f"{c:,}" for c in counts], fontsize=7)
            ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right")
            ax.set_title(mode)
            ax.set_xlabel("setting")
            ax.set_ylabel("hits")
        fig.suptitle(title)
    return to_svg(fig, "hits", title)


def _edges(bins: pl.DataFrame) -> tuple[list[float], list[float]]:
    """The sorted bin edges of one panel, as given and as drawn.

    The open under/overflow bins are drawn one typical bin wide; bins with no hit in between
    become steps of height 0.
    """
    given = sorted(set(bins["bin_lo"].to_list()) | set(bins["bin_hi"].to_list()))
    finite = [e for e in given if math.isfinite(e)]  # every bin has a finite edge
    steps = sorted(b - a for a, b in zip(finite, finite[1:], strict=False))
    width = steps[0] if steps else 1.0
    drawn = [
        e if math.isfinite(e) else (finite[0] - width if e < 0 else finite[-1] + width)
        for e in given
    ]
    return given, drawn


def _score_label(score_type: str | None) -> str:
    if score_type == "cosine_distance":
        return "raw score: cosine distance (lower is better)"
    if score_type == "bm25":
        return "raw score: bm25 (higher is better)"
    return f"raw score: {score_type or 'unknown'}"


def score_histograms(
    distributions: pl.DataFrame,
    colours: Mapping[str, str],
    *,
    cutoffs: Mapping[str, Sequence[float]] | None = None,
    operating: Mapping[str, float] | None = None,
) -> str | None:
    """Raw-score histograms stacked relevant / non-relevant / unjudged, one panel per mode.

    Each panel shows the mode's setting with the most hits (the loosest cut-off holds every
    hit the stricter ones return), with the mode's `cutoffs` as dotted lines and its
    `operating` cut-off dashed, so one sees where each threshold would cut.
    """
    raw = distributions.filter(pl.col("scale") == "raw")
    if raw.height == 0:
        return None
    totals = (
        raw.group_by("mode", "setting")
        .agg(pl.col("count").sum())
        .sort(["mode", "count", "setting"], descending=[False, True, False])
        .group_by("mode", maintain_order=True)
        .first()
    )
    title = "Score distributions by judgment (raw scores)"
    fig = new_figure(max(4.2, 3.4 * totals.height), 3.4)
    axes = axes_row(fig, totals.height)
    with matplotlib.rc_context(STYLE):
        for ax, (mode, setting, _) in zip(axes, totals.iter_rows(), strict=True):
            part = raw.filter((pl.col("mode") == mode) & (pl.col("setting") == setting))
            edges = _edges(part)
            base = [0] * (len(edges[0]) - 1)
            for relevance, colour in RELEVANCE_COLOURS.items():
                bins = part.filter(pl.col("relevance") == relevance)
                if bins.height == 0:
                    continue
                counts = dict(zip(bins["bin_lo"].to_list(), bins["count"].to_list(), strict=True))
                top = [b + counts.get(lo, 0) for b, lo in zip(base, edges[0], strict=False)]
                # Stacked: one filled step path per judgment (a patch per bin is far slower).
                ax.stairs(
                    top,
                    edges[1],
                    baseline=base,
                    fill=True,
                    color=colour,
                    alpha=0.8,
                    label=_RELEVANCE_LABELS[relevance],
                )
                base = top
            for cut in (cutoffs or {}).get(mode, ()):
                ax.axvline(cut, color="#555555", linestyle=":", linewidth=0.8)
            if operating and mode in operating:
                ax.axvline(operating[mode], color="black", linestyle="--", linewidth=1.2)
                ax.plot([], [], color="black", linestyle="--", label="operating cut-off")
            score_type = part["score_type"].drop_nulls().first() if part.height else None
            ax.set_xlabel(_score_label(None if score_type is None else str(score_type)))
            ax.set_ylabel("hits")
            ax.set_title(f"{mode} @ {setting}", color=colours.get(mode, "#333333"))
            ax.legend(loc="best")
        fig.suptitle(title)
    return to_svg(fig, "scores", title)


def overlap_heatmaps(overlap: pl.DataFrame) -> str | None:
    """Mean rank-biased overlap of two modes' results, setting of one against setting of other."""
    if overlap.height == 0:
        return None
    means = overlap.group_by("mode_a", "mode_b", "setting_a", "setting_b").agg(pl.col("rbo").mean())
    pairs = means.select("mode_a", "mode_b").unique().sort("mode_a", "mode_b").rows()
    title = "Rank-biased overlap between modes (mean over queries, media)"
    fig = new_figure(max(4.2, 3.6 * len(pairs)), 3.6)
    axes = axes_row(fig, len(pairs))
    with matplotlib.rc_context(STYLE):
        mesh = None
        for ax, (mode_a, mode_b) in zip(axes, pairs, strict=True):
            part = means.filter((pl.col("mode_a") == mode_a) & (pl.col("mode_b") == mode_b))
            rows = sorted(set(part["setting_a"].to_list()))
            cols = sorted(set(part["setting_b"].to_list()))
            value = {(a, b): v for a, b, v in part.select("setting_a", "setting_b", "rbo").rows()}
            grid = [[_nan(value.get((a, b))) for b in cols] for a in rows]
            mesh = ax.pcolormesh(grid, vmin=0.0, vmax=1.0, cmap="viridis", edgecolors="white")
            for i, a in enumerate(rows):
                for j, b in enumerate(cols):
                    v = value.get((a, b))
                    if v is not None:
                        ax.text(
                            j + 0.5,
                            i + 0.5,
                            f"{v:.2f}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if v < 0.6 else "black",
                        )
            ax.set_xticks([j + 0.5 for j in range(len(cols))], cols, rotation=30, ha="right")
            ax.set_yticks([i + 0.5 for i in range(len(rows))], rows)
            ax.set_xlabel(f"{mode_b} setting")
            ax.set_ylabel(f"{mode_a} setting")
            ax.set_title(f"{mode_a} vs {mode_b}")
            ax.grid(False)
        if mesh is not None:
            levels = [i / 20 for i in range(21)]  # 20 flat bands: a small vector legend
            bar = fig.colorbar(mesh, ax=axes, label="RBO (p = 0.9)", shrink=0.9, boundaries=levels)
            if bar.solids is not None:
                bar.solids.set_rasterized(False)  # vector, like the rest: no embedded PNG
        fig.suptitle(title)
    return to_svg(fig, "overlap", title, tight=True)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def comparison_deltas(
    measures: pl.DataFrame, measure: str, colours: Mapping[str, str], *, alpha: float = 0.05
) -> str | None:
    """Bars of the change in `measure` (B - A) per mode and setting; * when significant."""
    rows = measures.filter(
        (pl.col("unit") == "media") & (pl.col("measure") == measure) & pl.col("delta").is_not_nan()
    ).sort("mode", "cutoff", "setting", descending=[True, True, True], nulls_last=True)
    if rows.height == 0:
        return None
    title = f"Change in {measure}, run B − run A (media)"
    fig = new_figure(6.4, max(2.0, 0.34 * rows.height + 1.2))
    (ax,) = axes_row(fig, 1)
    with matplotlib.rc_context(STYLE):
        labels = [f"{m} @ {s}" for m, s in rows.select("mode", "setting").rows()]
        deltas = rows["delta"].to_list()
        bars = ax.barh(
            range(rows.height),
            deltas,
            color=[colours.get(m, "#333333") for m in rows["mode"].to_list()],
        )
        marks = [
            f"{d:+.3f}{' *' if sig else ''}"
            for d, sig in zip(deltas, rows["significant"].to_list(), strict=True)
        ]
        ax.bar_label(bars, marks, fontsize=7, padding=3)
        ax.set_yticks(range(rows.height), labels)
        ax.axvline(0.0, color="black", linewidth=0.8)
        span = max((abs(d) for d in deltas), default=0.0) or 0.05
        ax.set_xlim(-1.35 * span, 1.35 * span)
        ax.set_xlabel(f"Δ {measure} (mean over paired queries; * Holm-adjusted p < {alpha:g})")
        ax.set_title(title)
    return to_svg(fig, "deltas", title)
