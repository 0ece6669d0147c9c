"""The history page and its terminal text: each measure over the nights, the nights that moved.

    h = load_history("reports/suite=demo")          # runner.evaluate.history: the numbers
    print(render_text(h))                           # one text table per measure
    write_history_html(h, "history.html")           # the same tables and a plot, self-contained

Drawn with the report's own pieces: its page shell and style (`html.page`), its table renderers
(`html_parts.render_table`, `text.render_text_table`) and its plot style (`plots`).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Final

import polars as pl

from runner.evaluate.history import History
from runner.report.html import page
from runner.report.html_parts import render_table
from runner.report.plots import axes_column, mode_colours, new_figure, to_svg
from runner.report.table import DASH, DOWN, UP, Table, fmt
from runner.report.text import render_text_table
from runner.store.atomic import atomic_write
from runner.store.location import is_remote

__all__ = ["default_page", "history_plot", "history_tables", "render_text", "write_history_html"]

_MOVED_EDGE: Final = "#c62828"


def _labelled(series: pl.DataFrame) -> pl.DataFrame:
    """`series` with a line label (the mode, plus the setting where a mode has several) and a
    night label (run date and run id)."""
    settings = series.group_by("mode").agg(pl.col("setting").n_unique().alias("n_settings"))
    joined = series.join(settings, on="mode", how="left")
    return joined.with_columns(
        pl.when(pl.col("n_settings") == 1)
        .then(pl.col("mode"))
        .otherwise(pl.concat_str("mode", pl.lit(" "), "setting"))
        .alias("label"),
        pl.concat_str("run_date", pl.lit(" "), pl.col("run_id").str.slice(0, 24)).alias(
            "night_label"
        ),
    )


def _cell(cell: dict[str, object] | None) -> tuple[str, str]:
    """(text, mark) of one night of one line: the value, ▲/▼ where the night moved."""
    if cell is None or cell["value"] is None:
        return DASH, ""
    delta = cell["delta"] if isinstance(cell["delta"], float) else 0.0
    if not cell["moved"]:
        return fmt(cell["value"]), ""
    return f"{fmt(cell['value'])} {UP if delta > 0 else DOWN}", "up" if delta > 0 else "down"


def history_tables(history: History, max_nights: int) -> list[tuple[str, Table]]:
    """One table per measure: the last `max_nights` nights down, one column per line."""
    series = _labelled(history.series)
    tables = []
    for (measure,), group in series.group_by("measure", maintain_order=True):
        labels = sorted(group["label"].unique().to_list())
        nights = group.select("night", "night_label").unique().sort("night").tail(max_nights)
        cells = {(r["night"], r["label"]): r for r in group.iter_rows(named=True)}
        rows, marks = [], []
        for night, night_label in nights.iter_rows():
            shown = [_cell(cells.get((night, label))) for label in labels]
            rows.append((night_label, *(text for text, _ in shown)))
            marks.append(("", *(mark for _, mark in shown)))
        total = group["night"].n_unique()
        note = f"last {nights.height} of {total} nights" if nights.height < total else ""
        table = Table(
            headers=("night", *labels),
            rows=tuple(rows),
            numeric=frozenset(range(1, len(labels) + 1)),
            marks=tuple(marks),
            note=note,
        )
        tables.append((str(measure), table))
    return tables


def _moved_table(history: History) -> Table:
    return Table(
        headers=("night", "mode", "setting", "measure", "value", "Δ", "why"),
        rows=tuple(
            (
                f"{r['run_date']} {r['run_id']}",
                r["mode"],
                r["setting"],
                r["measure"],
                fmt(r["value"]),
                f"{r['delta']:+.3f}",
                r["why"],
            )
            for r in history.moved.iter_rows(named=True)
        ),
        numeric=frozenset({4, 5}),
    )


def _bands(history: History, measure: str) -> str:
    """Each series' noise floor on its last night: how far a quiet night may move it."""
    last = (
        _labelled(history.series.filter(pl.col("measure") == measure))
        .sort("night")
        .group_by("label", maintain_order=True)
        .last()
        .sort("label")
    )
    parts = [
        f"{r['label']} ±{r['floor']:.3f}"
        if r["floor"] is not None
        else f"{r['label']} (no band yet)"
        for r in last.iter_rows(named=True)
    ]
    return "band: " + ", ".join(parts)


def render_text(history: History, *, max_nights: int = 30) -> str:
    """Plain-text tables, one per measure: nights down, series across, ▲/▼ where a night moved."""
    lines = [f"history of {history.suite_dir} ({len(history.runs)} runs)", history.rule.describe()]
    for measure, table in history_tables(history, max_nights):
        lines += ["", measure, render_text_table(table), _bands(history, measure)]
    moved = history.moved
    lines += ["", f"{moved.height} series-nights moved"]
    for m in moved.iter_rows(named=True):
        lines.append(
            f"  {m['run_date']} {m['run_id']} {m['mode']} {m['setting']} {m['measure']}: "
            f"{m['value']:.3f} (Δ {m['delta']:+.3f}): {m['why']}"
        )
    lines.extend(f"note: {n}" for n in history.notes)
    return "\n".join(lines)


def history_plot(history: History) -> str | None:
    """One panel per measure, one line per mode (and setting), moved nights circled in red.

    Returns an inline `<svg>` in the report's plot style, None with nothing to draw.
    """
    series = _labelled(history.series).filter(pl.col("value").is_not_null())
    if series.is_empty():
        return None
    measures = series["measure"].unique(maintain_order=True).to_list()
    labels = sorted(series["label"].unique().to_list())
    colours = mode_colours(labels)
    nights = series.select("night", "run_date").unique().sort("night")
    fig = new_figure(7.5, 2.4 * len(measures) + 0.6)
    axes = axes_column(fig, len(measures))
    for ax, measure in zip(axes, measures, strict=True):
        for label in labels:
            line = series.filter((pl.col("measure") == measure) & (pl.col("label") == label))
            if line.is_empty():
                continue
            line = line.sort("night")
            ax.plot(
                line["night"], line["value"], marker="o", ms=3, lw=1.2, label=label,
                color=colours[label],
            )  # fmt: skip
            banded = line.filter(pl.col("band_lo").is_not_null())
            if not banded.is_empty():  # the noise band each night was held to
                ax.fill_between(
                    banded["night"], banded["band_lo"], banded["band_hi"],
                    color=colours[label], alpha=0.12, linewidth=0,
                )  # fmt: skip
            moved = line.filter(pl.col("moved"))
            if not moved.is_empty():
                ax.scatter(
                    moved["night"], moved["value"], s=90, facecolors="none",
                    edgecolors=_MOVED_EDGE, linewidths=1.5, zorder=3,
                )  # fmt: skip
        ax.set_ylabel(measure)
    axes[-1].set_xticks(
        nights["night"].to_list(), nights["run_date"].to_list(), rotation=45, ha="right"
    )
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_svg(fig, "history", "measures over time")


def default_page(history: History) -> Path | None:
    """Where the page goes unless asked: `history.html` in a local suite directory; None for
    one on object storage (pass a path: object storage is read, not written)."""
    if is_remote(history.suite_dir):
        return None
    return Path(history.suite_dir) / "history.html"


def write_history_html(
    history: History, path: str | os.PathLike[str], *, max_nights: int = 60
) -> Path:
    """A self-contained HTML page (the report's style and CSP, inline SVG), written atomically."""
    e = html.escape
    plot = history_plot(history)
    body = [
        f"<header><h1>History of {e(history.suite_dir)}</h1>",
        f"<p class='sub'>{len(history.runs)} runs; {e(history.rule.describe())}</p></header>",
        "<section><h2>Measures over time</h2>",
        plot if plot is not None else "<p class='note'>Nothing to plot.</p>",
        "</section>",
        f"<section><h2>Nights that moved ({history.moved.height})</h2>",
        render_table(_moved_table(history)),
        "</section>",
    ]
    for measure, table in history_tables(history, max_nights):
        body.append(f"<section><h2>{e(measure)}</h2>{render_table(table)}</section>")
    if history.notes:
        notes = "".join(f"<li>{e(n)}</li>" for n in history.notes)
        body.append(f"<section><h2>Notes</h2><ul>{notes}</ul></section>")
    target = Path(path)
    with atomic_write(target) as out:
        out.write(page(f"vlbench history: {history.suite_dir}", body).encode("utf-8"))
    return target
