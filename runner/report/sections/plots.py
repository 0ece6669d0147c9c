"""The plots of the quality sections: intervals, the hybrid what-if, cut-off curves.

Drawn like the report's other plots (`runner.report.plots`: matplotlib without pyplot, inline
SVG, one colour per mode); each returns an `<svg>` string or None when there is nothing to draw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import matplotlib
import polars as pl

from runner.report.plots import STYLE, axes_row, new_figure, to_svg

__all__ = ["cutoff_curves", "fusion_bars", "interval_forest"]

_FUSED: Final = "#444444"


def interval_forest(intervals: pl.DataFrame, colours: Mapping[str, str]) -> str | None:
    """Each measure's mean with its bootstrap interval, a row per (measure, mode).

    `intervals`: mode, setting, measure, value, ci_lo, ci_hi (one setting per mode).
    """
    rows = intervals.filter(pl.col("value").is_not_null()).sort("measure", "mode")
    if rows.height == 0:
        return None
    title = "Means and 95% bootstrap intervals (best settings)"
    fig = new_figure(6.8, 0.9 + 0.24 * rows.height)
    (ax,) = axes_row(fig, 1)
    with matplotlib.rc_context(STYLE):
        labels = []
        for y, row in enumerate(rows.iter_rows(named=True)):
            colour = colours.get(row["mode"], _FUSED)
            ax.errorbar(
                [row["value"]],
                [y],
                xerr=[[row["value"] - row["ci_lo"]], [row["ci_hi"] - row["value"]]],
                fmt="o",
                color=colour,
                capsize=3,
            )
            labels.append(f"{row['measure']} · {row['mode']} @ {row['setting']}")
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.set_xlabel("mean over judged queries")
        ax.set_title(title)
    return to_svg(fig, "intervals", title)


def fusion_bars(
    systems: pl.DataFrame, best: str | None, measure: str, colours: Mapping[str, str]
) -> str | None:
    """Every fused system and every mode alone on `measure`, mean and interval, best first.

    `systems`: mode, setting, value, ci_lo, ci_hi; fused modes start with "fused:".
    """
    rows = systems.filter(pl.col("value").is_not_null()).sort("value", descending=True)
    if rows.height == 0:
        return None
    title = f"{measure}: fusions and modes alone (95% CI)"
    fig = new_figure(6.8, 0.9 + 0.26 * rows.height)
    (ax,) = axes_row(fig, 1)
    with matplotlib.rc_context(STYLE):
        for y, row in enumerate(rows.iter_rows(named=True)):
            fused = str(row["mode"]).startswith("fused:")
            colour = _FUSED if fused else colours.get(row["mode"], _FUSED)
            ax.barh(
                [y],
                [row["value"]],
                color=colour,
                alpha=1.0 if row["mode"] == best or not fused else 0.45,
                xerr=[[row["value"] - row["ci_lo"]], [row["ci_hi"] - row["value"]]],
                capsize=3,
            )
        labels = [
            f"{'★ ' if m == best else ''}{m}" + ("" if m.startswith("fused:") else f" @ {s}")
            for m, s in rows.select("mode", "setting").iter_rows()
        ]
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.set_xlabel(f"{measure}, mean over judged queries")
        ax.set_title(title)
    return to_svg(fig, "fusion", title)


def cutoff_curves(curves: pl.DataFrame, advice: pl.DataFrame) -> str | None:
    """Precision and recall against the cut-off, with bands, targets and the advised cut-offs.

    One panel per mode; the band around each line is its 95% bootstrap interval; dashed lines
    are the targets; a vertical line marks each advised cut-off, shaded over its interval.
    """
    modes = curves["mode"].unique(maintain_order=True).to_list()
    if not modes:
        return None
    title = "Cut-off advice: precision and recall against the cut-off (95% bands)"
    fig = new_figure(min(11.0, 4.2 * len(modes) + 0.6), 3.6)
    axes = axes_row(fig, len(modes))
    styles = {"precision": ("#1f77b4", "-"), "recall": ("#d62728", "-")}
    with matplotlib.rc_context(STYLE):
        for ax, mode in zip(axes, modes, strict=True):
            part = curves.filter(pl.col("mode") == mode).sort("cutoff")
            x = part["cutoff"].to_list()
            for name, (colour, style) in styles.items():
                ax.plot(x, part[name].to_list(), style, marker="o", color=colour, label=name)
                ax.fill_between(
                    x,
                    part[f"{name}_lo"].to_list(),
                    part[f"{name}_hi"].to_list(),
                    color=colour,
                    alpha=0.15,
                )
            for row in advice.filter(pl.col("mode") == mode).iter_rows(named=True):
                colour = styles[row["target"]][0]
                ax.axhline(row["level"], color=colour, linestyle="--", linewidth=0.8)
                if row["cutoff"] is None:
                    continue
                ax.axvline(row["cutoff"], color=colour, linestyle=":", linewidth=1.2)
                if row["cutoff_lo"] is not None and row["cutoff_hi"] is not None:
                    ax.axvspan(row["cutoff_lo"], row["cutoff_hi"], color=colour, alpha=0.07)
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("cut-off")
            ax.set_title(mode)
        axes[0].set_ylabel("mean over judged queries")
        axes[0].legend(loc="best")
        fig.suptitle(title)
    return to_svg(fig, "cutoffs", title)
