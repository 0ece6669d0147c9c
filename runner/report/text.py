"""Tables and verdicts for the terminal: the same `Table`s the HTML and Markdown show, as text.

print(render_text_table(verdict_table(cmp)))
print(comparison_text(cmp, failures, gates, ev_b.measures))
"""

from __future__ import annotations

from runner.evaluate.compare import (
    Comparison,
    describe_pairs,
    unpaired_modes,
)
from runner.report.compare_tables import verdict_table
from runner.report.table import Table
from runner.report.write import ComparisonReport

__all__ = ["comparison_text", "render_text_table", "unpaired_notes"]


def render_text_table(table: Table) -> str:
    """A table as aligned plain text: numeric columns right-aligned, a rule under the header."""
    widths = [len(h) for h in table.headers]
    for row in table.rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(w) if i in table.numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [line(table.headers), rule, *(line(row) for row in table.rows)]
    if table.note:
        lines.append(f"({table.note})")
    return "\n".join(lines)


def _pairs_lines(cmp: Comparison, same_run: bool) -> list[str]:
    """Which settings were compared, when that is not simply each with itself."""
    if not cmp.crossed:
        return []
    where = "two settings of one run" if same_run else "settings paired"
    return [f"{where} (A → B): {describe_pairs(cmp.pairs)}"]


def comparison_text(done: ComparisonReport) -> str:
    """The verdict `vlbench compare` prints: the media-level table, significance, each gate."""
    cmp, failures, order = done.comparison, done.failures, done.ev_b.measures
    gates = [str(g) for g in done.gates]
    media = cmp.measures.filter(cmp.measures["unit"] == "media")
    significant = int(media["significant"].sum())
    lines = [
        f"run B {cmp.run_b} against run A {cmp.run_a} (media level; * Holm-adjusted "
        f"p < {cmp.alpha:g}, paired randomisation test)",
        *_pairs_lines(cmp, done.same_run),
        "",
        render_text_table(verdict_table(cmp, "media", order)),
        "",
        f"{significant} of {media.height} differences significant.",
    ]
    failed = {str(f.gate) for f in failures}
    for gate in gates:
        lines.append(f"gate {gate}: {'FAIL' if gate in failed else 'pass'}")
    lines += [f"  FAIL {f}" for f in failures]
    return "\n".join(lines)


def unpaired_notes(done: ComparisonReport) -> list[str]:
    """A note for each mode both runs hold that nothing compared (settings that differ)."""
    notes = []
    pairs = done.comparison.pairs
    for mode, (settings_a, settings_b) in unpaired_modes(done.ev_a, done.ev_b, pairs).items():
        notes.append(
            f"note: mode {mode} was not compared: no setting in common (run A: "
            f"{', '.join(settings_a)}; run B: {', '.join(settings_b)}); pair them with "
            "--setting-a/--setting-b or --across-settings"
        )
    return notes
