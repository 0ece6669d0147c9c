"""The self-contained HTML report: one file, inline CSS, inline SVG plots, nothing fetched.

The page carries a Content-Security-Policy that forbids every fetch (`default-src 'none'`), so
even a browser that opens it online asks nothing of the network; there is no script at all.
Every piece of text that comes from a run (captions, file names, query texts, ids) goes
through `html.escape`; plots are SVG text that matplotlib wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from runner.evaluate.compare import describe_pairs
from runner.report import compare_tables, tables
from runner.report.content import ReportContent
from runner.report.html_parts import escape, html_note, plot_or_note, render_table, section
from runner.report.plots import mode_colours
from runner.report.sections.extra import ExtraSection
from runner.report.sections.page import comparison_html, html_sections

__all__ = ["CSP", "CSS", "SECTIONS", "Plots", "page", "render_html"]

CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

# (id, title) of every section, in page order; "comparison" only for `vlbench compare`.
SECTIONS: Final = (
    ("comparison", "Comparison with run A"),
    ("headline", "Headline"),
    ("intervals", "Confidence intervals"),
    ("fusion", "Hybrid what-if"),
    ("cutoffs", "Cut-off advice"),
    ("pr-curves", "Precision and recall across thresholds"),
    ("hits", "Hits per setting"),
    ("distributions", "Score distributions"),
    ("overlap", "Full-text versus semantic"),
    ("threshold-check", "Threshold check"),
    ("worst-queries", "Worst queries"),
    ("unjudged", "Unjudged hits"),
)

# The page style, shared by every self-contained page (`page`): the report, the history.
CSS: Final = """
:root { color-scheme: light; --fg: #1d232a; --muted: #5b6672; --line: #d9dee3; --bg: #ffffff;
  --band: #f5f7f9; --good: #17803d; --bad: #c62828; --warn: #b26a00; --accent: #1f5fa8; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p.sub { margin: 0 0 16px; color: var(--muted); }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr));
  gap: 4px 24px; margin: 0 0 16px; padding: 12px 16px; background: var(--band);
  border-radius: 6px; }
dl.facts div { display: flex; gap: 8px; min-width: 0; }
dl.facts dt { color: var(--muted); min-width: 72px; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
nav { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 8px 0 24px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; white-space: nowrap; }
section { margin-top: 36px; }
h2 { font-size: 19px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 22px 0 6px; }
p.note, p.more { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
.banner { padding: 10px 14px; border-radius: 6px; margin: 12px 0; font-weight: 600; }
.banner.fail { background: #fdecea; color: var(--bad); }
.banner.pass { background: #e8f5ec; color: var(--good); }
.banner.warn { background: #fff4e0; color: var(--warn); }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: var(--band); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fbfcfd; }
td.best { font-weight: 700; background: #e8f5ec !important; }
td.up { color: var(--good); font-weight: 600; }
td.down { color: var(--bad); font-weight: 600; }
td.warn { color: var(--warn); font-weight: 700; }
td.caption { max-width: 460px; }
svg.plot { display: block; max-width: 100%; height: auto; margin: 8px 0; }
details { margin: 8px 0; }
details summary { cursor: pointer; color: var(--accent); }
.query { margin: 14px 0 20px; padding: 8px 12px; border-left: 3px solid var(--line); }
.query h4 { margin: 0 0 4px; font-size: 14px; }
.query .q-text { color: var(--muted); font-weight: 400; }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""


@dataclass(frozen=True, slots=True)
class Plots:
    """The inline SVG of each plot, None where there was nothing to draw."""

    pr_curves: str | None = None
    hits: str | None = None
    scores: str | None = None
    overlap: str | None = None
    deltas: str | None = None


def _section(key: str, body: Iterable[str]) -> str:
    return section(key, dict(SECTIONS)[key], body)


def _extra(extra: ExtraSection) -> str:
    parts = [html_note(text) for text in extra.notes] + list(extra.plots)
    for heading, table in extra.tables:
        parts += [f"<h3>{escape(heading)}</h3>"] if heading else []
        parts.append(render_table(table))
    return section(extra.key, extra.title, parts)


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def _header(content: ReportContent) -> str:
    run = content.run
    facts = "".join(
        f"<div><dt>{escape(label)}</dt><dd>{escape(value)}</dd></div>"
        for label, value in tables.run_facts(content)
    )
    status = run.get("status")
    banner = ""
    if status not in (None, "complete"):
        banner = (
            f'<div class="banner warn">This run is {escape(status)}: failed or missing requests '
            "count as returning nothing.</div>"
        )
    verdict = content.api_verdict()
    if verdict is not None:
        kind, text = verdict
        css, lead = ("fail", "API changed") if kind == "changed" else ("pass", "API as expected")
        banner = (
            f'<div class="banner {css}" id="api-contract">{lead}: {escape(text)}</div>' + banner
        )
    title = f"vlbench report — {run.get('suite_name') or 'run'}"
    sub = f"run {run.get('run_id')}"
    if content.comparison is not None:
        sub = f"run B {content.comparison.run_b} compared with run A {content.comparison.run_a}"
    return (
        f'<header><h1>{escape(title)}</h1><p class="sub">{escape(sub)}</p>'
        f'<dl class="facts">{facts}</dl>{banner}</header>'
    )


def _nav(keys: Sequence[str], extras: Sequence[ExtraSection] = ()) -> str:
    titles = dict(SECTIONS) | {s.key: s.title for s in extras}
    keys = [*keys, *(s.key for s in extras)]
    links = "".join(f'<a href="#{escape(k)}">{escape(titles[k])}</a>' for k in keys)
    return f"<nav>{links}</nav>"


def _comparison(content: ReportContent, plots: Plots) -> str:
    cmp = content.comparison
    if cmp is None:  # pragma: no cover - the caller checks
        return ""
    parts = [
        html_note(
            f"Run B ({cmp.run_b}) against run A ({cmp.run_a}), per mode, setting and measure, "
            f"over the queries both runs scored. ▲/▼: direction of the change; * and colour: "
            f"significant after Holm's correction across the measures of a setting "
            f"(paired randomisation test, {cmp.n_permutations:,} sign flips, seed {cmp.seed}; "
            f"α = {cmp.alpha:g}). d_z: Cohen's effect size for paired data."
        )
    ]
    if cmp.crossed:
        parts.append(html_note(f"Settings compared (A → B): {describe_pairs(cmp.pairs)}."))
    if content.gates:
        failed = {str(f.gate) for f in content.failures}
        if failed:
            items = "".join(f"<li>{escape(f)}</li>" for f in content.failures)
            parts.append(
                f'<div class="banner fail">Gates failed: {escape(", ".join(sorted(failed)))}</div>'
                f"<ul>{items}</ul>"
            )
        else:
            gates = ", ".join(str(g) for g in content.gates)
            parts.append(f'<div class="banner pass">All gates passed: {escape(gates)}</div>')
    media = cmp.measures.filter(pl.col("unit") == "media")
    better = media.filter(pl.col("significant") & (pl.col("delta") > 0)).height
    worse = media.filter(pl.col("significant") & (pl.col("delta") < 0)).height
    parts.append(
        html_note(f"Media level: {better} significant increases, {worse} significant decreases.")
    )
    parts.append(plot_or_note(plots.deltas, f"No {content.primary} values to compare."))
    parts.append("<h3>Every measure (media)</h3>")
    order = content.ev.measures
    parts.append(render_table(compare_tables.verdict_table(cmp, "media", order)))
    parts.append(
        _details(
            "Every measure (clusters)",
            render_table(compare_tables.verdict_table(cmp, "cluster", order)),
        )
    )
    texts = dict(content.ev.queries.select("query_id", "query_text").iter_rows())
    parts.append(f"<h3>Queries that regressed most on {escape(content.primary)}</h3>")
    parts.append(render_table(compare_tables.regressions_table(cmp, content.primary, texts)))
    parts.append("<h3>Rank displacement (useful where judgments are missing)</h3>")
    parts.append(
        html_note(
            "How far B's rankings moved from A's per query: rank-biased overlap (1 = same "
            "order), Jaccard of the top 10, and the mean change of rank of the media both "
            "returned."
        )
    )
    parts.append(render_table(compare_tables.displacement_table(cmp)))
    parts.append("<h3>Score drift</h3>")
    parts.append(
        html_note(
            "Normalised scores (higher is better) of all hits: two-sample Kolmogorov–Smirnov "
            "statistic and the shift of quantiles from A to B."
        )
    )
    parts.append(render_table(compare_tables.drift_table(cmp)))
    if content.quality is not None:
        parts.append(comparison_html(content.quality))
    return _section("comparison", parts)


def _headline(content: ReportContent) -> str:
    parts = [
        html_note(
            f"Mean over judged queries of each measure at each setting; the best setting of "
            f"each quality measure is highlighted. Rows run from the strictest cut-off to the "
            f"loosest. The report ranks by {content.primary}."
        )
    ]
    for h in content.headlines:
        if h.unit != "media":
            continue
        parts.append(f"<h3>{escape(h.mode)}</h3>")
        parts.append(render_table(tables.headline_table(h)))
    clusters = [h for h in content.headlines if h.unit == "cluster"]
    if clusters:
        body = "".join(
            f"<h3>{escape(h.mode)} (clusters)</h3>{render_table(tables.headline_table(h))}"
            for h in clusters
        )
        parts.append(_details("The same counted on clusters", body))
    parts.append("<h3>Operating points</h3>")
    parts.append(render_table(tables.operating_points_table(content.ev)))
    return _section("headline", parts)


def _worst(content: ReportContent) -> str:
    if not content.worst:
        return _section("worst-queries", [html_note("No judged queries: nothing to rank.")])
    parts = [
        html_note(
            f"Per mode, at its best setting by {content.primary}: the judged queries that "
            f"scored lowest, with their top hits."
        )
    ]
    for q in content.worst:
        heading = (
            f"<h4>{escape(q.mode)} @ {escape(q.setting)} · {escape(q.query_id)} "
            f'<span class="q-text">{escape(q.query_text or "")}</span></h4>'
        )
        facts = html_note(tables.worst_query_facts(q))
        hits = render_table(tables.top_hits_table(q)) if q.hits else html_note("Returned nothing.")
        parts.append(f'<div class="query">{heading}{facts}{hits}</div>')
    return _section("worst-queries", parts)


def render_html(content: ReportContent, plots: Plots) -> str:
    """The whole report page as one string."""
    ev = content.ev
    best = content.best_settings()
    keys = [k for k, _ in SECTIONS if k != "comparison" or content.comparison is not None]
    if content.quality is None:
        keys = [k for k in keys if k not in ("intervals", "fusion", "cutoffs")]
    body = [_header(content), _nav(keys, content.extras)]
    if content.comparison is not None:
        body.append(_comparison(content, plots))
    body.append(_headline(content))
    if content.quality is not None:
        colours = mode_colours(content.modes)
        body += html_sections(content.quality, content.primary, colours, dict(SECTIONS))
    body.append(
        _section(
            "pr-curves",
            [
                html_note(
                    "Set precision and recall of everything each setting returned, averaged "
                    "over judged queries; the star is each mode's operating point."
                ),
                plot_or_note(plots.pr_curves, "No judgments: precision and recall are unknown."),
            ],
        )
    )
    body.append(_section("hits", [plot_or_note(plots.hits, "No hits.")]))
    body.append(
        _section(
            "distributions",
            [
                html_note(
                    "Raw scores at each mode's loosest setting, split by judgment; dotted lines "
                    "are the cut-offs of the sweep, the dashed line the operating point's."
                ),
                plot_or_note(plots.scores, "No scores."),
                _details("Quantiles", render_table(tables.quantiles_table(ev))),
            ],
        )
    )
    body.append(
        _section(
            "overlap",
            [
                plot_or_note(plots.overlap, "Only one mode: nothing to compare."),
                "<h3>At each mode's best setting</h3>",
                html_note(
                    f"Best by {content.primary}: "
                    + ", ".join(f"{m} @ {s}" for m, s in best.items())
                    + ". Jaccard of the top k and rank-biased overlap, means over queries; "
                    "media found by one mode only, summed over queries; per-query wins."
                ),
                render_table(tables.overlap_table(ev, best)),
                render_table(tables.wins_table(ev, content.primary, best)),
                _details(
                    "Every pair of settings",
                    render_table(tables.overlap_table(ev))
                    + render_table(tables.wins_table(ev, content.primary)),
                ),
            ],
        )
    )
    body.append(
        _section(
            "threshold-check",
            [
                html_note(
                    "Does every hit honour the cut-off its request asked for? The contract "
                    "reads a distance cut-off as score <= cut-off; the other reading is counted "
                    "too, because the API documentation is ambiguous."
                ),
                render_table(tables.threshold_table(ev)),
            ],
        )
    )
    body.append(_worst(content))
    body.append(
        _section(
            "unjudged",
            [
                html_note(
                    "Hits in the top k without a judgment. `vlbench judge-todo RUN` writes them "
                    "as a qrels file to label."
                ),
                render_table(tables.unjudged_table(ev)),
            ],
        )
    )
    body += [_extra(section) for section in content.extras]
    footer = (
        f"<footer>Written by vlbench {escape(content.run.get('tool_version') or '')} at "
        f"{escape(content.generated_at)} from {escape(content.run.get('path') or '')}.</footer>"
    )
    title = f"vlbench report — {content.run.get('suite_name') or ''} {content.run.get('run_id')}"
    return page(title, [*body, footer])


def page(title: str, body: Iterable[str]) -> str:
    """A whole self-contained page: the CSP that forbids every fetch, the report's style, `body`
    (markup the caller escaped). Shared by the report and the history page."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
