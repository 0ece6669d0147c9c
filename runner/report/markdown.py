"""The Markdown report: the same tables as the HTML one, for a terminal, a pull request or a wiki.

No plots (they live in `report.html`). Cell text has its pipes escaped and every "<" that could
open a tag written as an entity, so a caption can neither break a table nor inject markup into
a renderer that allows HTML.
"""

from __future__ import annotations

from runner.evaluate.compare import describe_pairs
from runner.report import compare_tables, tables
from runner.report.content import ReportContent
from runner.report.md_parts import md_cell, md_table
from runner.report.sections.page import markdown_lines

__all__ = ["render_markdown"]


def render_markdown(content: ReportContent) -> str:
    """The report as Markdown."""
    ev = content.ev
    run = content.run
    out = [f"# vlbench report — {md_cell(run.get('suite_name') or 'run')}", ""]
    out += [
        f"- **{md_cell(label)}**: {md_cell(value)}" for label, value in tables.run_facts(content)
    ]
    out.append("")
    verdict = content.api_verdict()
    if verdict is not None:
        lead = "**API changed**" if verdict[0] == "changed" else "API as expected"
        out += [f"> {lead}: {md_cell(verdict[1])}", ""]
    if run.get("status") not in (None, "complete"):
        out += [f"> This run is **{md_cell(run['status'])}**: missing requests count as empty.", ""]
    cmp = content.comparison
    if cmp is not None:
        out += [f"## Comparison: run B {md_cell(cmp.run_b)} against run A {md_cell(cmp.run_a)}", ""]
        out += [
            f"▲/▼ direction of the change; * significant after Holm's correction "
            f"(paired randomisation test, {cmp.n_permutations:,} sign flips, α = {cmp.alpha:g}).",
            "",
        ]
        if cmp.crossed:
            out += [f"Settings compared (A → B): {md_cell(describe_pairs(cmp.pairs))}.", ""]
        if content.gates:
            if content.failures:
                out += ["**Gates failed:**", ""] + [
                    f"- {md_cell(str(f))}" for f in content.failures
                ]
            else:
                out.append("All gates passed: " + ", ".join(md_cell(str(g)) for g in content.gates))
            out.append("")
        out += [md_table(compare_tables.verdict_table(cmp, "media", ev.measures)), ""]
        texts = dict(ev.queries.select("query_id", "query_text").iter_rows())
        out += [f"### Queries that regressed most on {content.primary}", ""]
        out += [md_table(compare_tables.regressions_table(cmp, content.primary, texts)), ""]
        out += ["### Rank displacement", "", md_table(compare_tables.displacement_table(cmp)), ""]
        out += ["### Score drift", "", md_table(compare_tables.drift_table(cmp)), ""]
    out += ["## Headline", ""]
    out += [
        f"Mean over judged queries; the best setting of each quality measure in bold. "
        f"Ranked by {content.primary}.",
        "",
    ]
    for h in content.headlines:
        if h.unit == "media":
            out += [f"### {md_cell(h.mode)}", "", md_table(tables.headline_table(h)), ""]
    out += ["### Operating points", "", md_table(tables.operating_points_table(ev)), ""]
    if content.quality is not None:
        out += markdown_lines(content.quality, content.primary)
    best = content.best_settings()
    out += ["## Full-text versus semantic", ""]
    out += [f"At each mode's best setting by {content.primary}:", ""]
    out += [md_table(tables.overlap_table(ev, best)), ""]
    out += [
        f"Per-query wins on {content.primary}:",
        "",
        md_table(tables.wins_table(ev, content.primary, best)),
        "",
    ]
    out += ["## Threshold check", "", md_table(tables.threshold_table(ev)), ""]
    out += ["## Worst queries", ""]
    if not content.worst:
        out += ["_No judged queries._", ""]
    for q in content.worst:
        out += [
            f"### {md_cell(q.mode)} @ {md_cell(q.setting)} · {md_cell(q.query_id)}: "
            f"{md_cell(q.query_text or '')}",
            "",
            md_cell(tables.worst_query_facts(q)),
            "",
            md_table(tables.top_hits_table(q)) if q.hits else "_Returned nothing._\n",
        ]
    out += ["## Unjudged hits", "", md_table(tables.unjudged_table(ev)), ""]
    for section in content.extras:
        out += [f"## {md_cell(section.title)}", ""]
        out += [line for text in section.notes for line in (md_cell(text), "")]
        for heading, table in section.tables:
            out += [f"### {md_cell(heading)}", ""] if heading else []
            out += [md_table(table), ""]
    out += ["Plots: see `report.html` next to this file.", ""]
    return "\n".join(out)
