"""The pieces of a Markdown report: a cell's text made safe, and a table.

`markdown` and the quality sections (`sections/page`) both build from these.
"""

from __future__ import annotations

import re

from runner.report.table import Table

__all__ = ["md_cell", "md_table"]


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def md_cell(text: str) -> str:
    """One line of cell text: pipes escaped, and every "<" that could open a tag an entity.

    A bare "<" (as in a gate, "nDCG@10<-0.02") stays readable in a terminal.
    """
    flat = " ".join(str(text).split())
    return _TAG_START.sub("&lt;", flat).replace("|", "\\|")


def md_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table; the best cells of a headline in bold."""
    if not table.rows:
        return "_Nothing to show._\n"
    align = ["---:" if i in table.numeric else "---" for i in range(len(table.headers))]
    lines = [
        "| " + " | ".join(md_cell(h) for h in table.headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    for r, row in enumerate(table.rows):
        cells = []
        for c, value in enumerate(row):
            text = md_cell(value)
            cells.append(f"**{text}**" if table.mark(r, c) in ("best", "up", "down") else text)
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", f"_{md_cell(table.note)}_"]
    return "\n".join(lines) + "\n"
