"""The small pieces of HTML every page of the report is made of: escaped text, notes, tables.

`html`, `history` and the quality sections (`sections/page`) all build from these, so a cell is
escaped and a table aligned the same way everywhere.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Final

from runner.report.table import Table

__all__ = ["escape", "html_note", "plot_or_note", "render_table", "section"]

_NUM: Final = ' class="num"'


def escape(text: object) -> str:
    """Text for HTML: every character that could open markup or end an attribute escaped."""
    return html.escape(str(text), quote=True)


def html_note(text: str) -> str:
    """A note paragraph (grey, small)."""
    return f'<p class="note">{escape(text)}</p>'


def section(key: str, title: str, parts: Iterable[str]) -> str:
    """A `<section>` with its id (the page's anchor) and heading."""
    return f'<section id="{escape(key)}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


def plot_or_note(svg: str | None, missing: str) -> str:
    """The plot's SVG, or a note saying why there is none."""
    return svg if svg is not None else html_note(missing)


def render_table(table: Table, *, cls: str = "") -> str:
    """A `<table>` with every cell escaped; numeric columns right-aligned, marks as classes."""
    if not table.rows:
        return '<p class="note">Nothing to show.</p>'
    head = "".join(
        f"<th{_NUM if i in table.numeric else ''}>{escape(h)}</th>"
        for i, h in enumerate(table.headers)
    )
    body = []
    for r, row in enumerate(table.rows):
        cells = []
        for c, cell in enumerate(row):
            classes = " ".join(
                x
                for x in (
                    "num" if c in table.numeric else "",
                    table.mark(r, c),
                    "caption" if table.headers[c] == "caption" else "",
                )
                if x
            )
            cells.append(
                f'<td class="{classes}">{escape(cell)}</td>'
                if classes
                else f"<td>{escape(cell)}</td>"
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    note = f'<p class="more">{escape(table.note)}</p>' if table.note else ""
    attr = f' class="{escape(cls)}"' if cls else ""
    return (
        f'<div class="table-wrap"><table{attr}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{note}"
    )
