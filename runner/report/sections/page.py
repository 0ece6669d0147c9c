"""The quality sections of `report.html` and `report.md`.

`html_sections` returns the sections "intervals", "fusion" and "cutoffs" (in
`runner.report.html.SECTIONS` order); `comparison_html` the parts appended to the comparison
section; `markdown_lines` the same for `report.md` (no plots there).
"""

from __future__ import annotations

from collections.abc import Mapping

from runner.report.html_parts import escape, html_note, plot_or_note, render_table, section
from runner.report.md_parts import md_table
from runner.report.sections import render
from runner.report.sections.quality import Quality

__all__ = ["comparison_html", "html_sections", "markdown_lines"]


def _fusion_note(q: Quality, primary: str) -> str:
    if q.best_fusion is None:
        return "No two modes to fuse."
    at = ", ".join(f"{m} @ {s}" for m, s in q.fused.settings[q.best_fusion].items())
    return (
        f"What if the modes' stored rankings were fused per query? Each mode at its best setting "
        f"by {primary}; RRF (k = 60) and CombSUM / CombMNZ over min-max normalised scores, each "
        f"scored like a real mode over the same judgments. The best fusion, {q.best_fusion} "
        f"({at}), against each mode alone: paired randomisation test over queries, "
        f"Holm-corrected across every fusion and mode; interval: paired bootstrap."
    )


def html_sections(
    q: Quality, primary: str, colours: Mapping[str, str], titles: Mapping[str, str]
) -> list[str]:
    """The three quality sections of the HTML report."""
    svgs = render.render_plots(q, primary, colours)
    opts = q.options
    return [
        section(
            "intervals",
            titles["intervals"],
            [
                html_note(
                    f"95% percentile bootstrap intervals over queries ({opts.n_resamples:,} "
                    f"resamples, seed {opts.seed}): where the mean of each measure would land "
                    "with another sample of queries like these. Every setting's intervals are "
                    "in summary.json."
                ),
                plot_or_note(svgs["intervals"], "No judged queries: no intervals."),
                render_table(render.intervals_table(q)),
            ],
        ),
        section(
            "fusion",
            titles["fusion"],
            [
                html_note(_fusion_note(q, primary)),
                plot_or_note(svgs["fusion"], "Nothing to fuse."),
                render_table(render.fusion_table(q)),
                "<details><summary>Every fusion tried</summary>"
                f"{render_table(render.all_fusions_table(q))}</details>",
            ],
        ),
        section(
            "cutoffs",
            titles["cutoffs"],
            [
                html_note(
                    f"For each mode with a swept cut-off: the setting that reaches precision "
                    f"{opts.target_p:g} with the most recall, and the one that reaches recall "
                    f"{opts.target_r:g} with the most precision (macro set measures over judged "
                    "queries). The interval is that of the cut-off chosen again on bootstrap "
                    "resamples of the queries; 'same pick' is how often it was this one."
                ),
                plot_or_note(svgs["cutoffs"], "No mode has two or more cut-offs."),
                render_table(render.advice_table(q)),
            ],
        ),
    ]


def comparison_html(q: Quality) -> str:
    """Noise floor, held-back gates and score shift, for the end of the comparison section."""
    parts = []
    for heading, note, table in render.comparison_tables(q):
        parts.append(f"<h3>{escape(heading)}</h3>{html_note(note)}")
        parts.append(render_table(table) if table is not None else html_note("None."))
    return "".join(parts)


def markdown_lines(q: Quality, primary: str) -> list[str]:
    """The quality sections of report.md (and the comparison's parts when there is one)."""
    out = []
    parts = render.comparison_tables(q)
    if parts:
        out += ["## Comparison: noise floor and score shift", ""]
    for heading, note, table in parts:
        out += [f"### {heading}", "", note, "", md_table(table) if table else "_None._", ""]
    out += ["## Confidence intervals", "", md_table(render.intervals_table(q)), ""]
    out += ["## Hybrid what-if", "", _fusion_note(q, primary), ""]
    out += [md_table(render.fusion_table(q)), ""]
    out += ["## Cut-off advice", "", md_table(render.advice_table(q)), ""]
    return out
