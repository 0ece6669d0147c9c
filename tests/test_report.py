"""Reports: the files written, summary.json against the Evaluation, every HTML section, escaping,
and no reference to anything outside the page."""

from __future__ import annotations

import json
import math
import random
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from run_builder import build_run, hit, judgment
from typer.testing import CliRunner

from runner.cli import app
from runner.evaluate.compare import Comparison, check_gates, compare_run_dirs, parse_gate
from runner.evaluate.evaluation import Evaluation
from runner.evaluate.run import evaluate_run
from runner.report import ReportPaths, write_report
from runner.report.content import safe_url
from runner.report.html import CSP, SECTIONS

N_QUERIES = 16
UNJUDGED = ("q14", "q15")  # queries without judgments
EVIL = "<script>alert('x')</script> & \"quotes\""
SWEEP = (0.45, 0.55, 0.65)

# --- a small but realistic run: three modes, a threshold sweep, graded and missing judgments --


def realistic_hits(
    seed: int = 1, *, worse: float = 0.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hits and judgments of a run; `worse` pushes relevant media's distances up (run B)."""
    rnd = random.Random(seed)
    hits: list[dict[str, Any]] = []
    judgments: list[dict[str, Any]] = []
    for qi in range(N_QUERIES):
        query = f"q{qi:02d}"
        pool = [f"img{qi:02d}-{j:02d}" for j in range(24)]
        relevant = set(pool[: 2 + qi % 4])
        if query not in UNJUDGED:
            judgments += [judgment(query, m, 1 + (i == 0)) for i, m in enumerate(sorted(relevant))]
            judgments += [judgment(query, m, 0) for m in pool[10:14]]
        for mode in ("caption", "semantic"):
            distance = {
                m: (rnd.gauss(0.42 + worse, 0.06) if m in relevant else rnd.gauss(0.62, 0.09))
                for m in pool
            }
            for cut in SWEEP:
                kept = sorted((d, m) for m, d in distance.items() if d <= cut)
                for d, m in kept:
                    hits.append(
                        hit(
                            query,
                            m,
                            mode=mode,
                            setting=f"{'tst' if mode == 'caption' else 'sem'}={cut}",
                            cutoff=cut,
                            raw_score=d,
                            caption=EVIL if m.endswith("-00") else f"a photo of {m}",
                            labels=["dog"] if m in relevant else ["cat"],
                        )
                    )
        bm25 = {m: rnd.uniform(8, 16) if m in relevant else rnd.uniform(2, 12) for m in pool[:14]}
        for m, s in sorted(bm25.items(), key=lambda item: -item[1]):
            hits.append(
                hit(query, m, mode="fts", raw_score=s, score_type="bm25", caption=f"caption {m}")
            )
    return hits, judgments


def realistic_run(root: Path, run_id: str = "run-a", *, worse: float = 0.0, seed: int = 1) -> Path:
    hits, judgments = realistic_hits(seed, worse=worse)
    return build_run(root, hits=hits, judgments=judgments, run_id=run_id, suite_name="demo")


@dataclass(frozen=True, slots=True)
class Written:
    run_dir: Path
    ev: Evaluation
    paths: ReportPaths


SECRET_URL = "https://user:hunter2@api.example.com/v1?token=abc.def.ghi#frag"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written]:
    """A report written with the network refused, of a run whose manifest URL holds secrets."""
    run_dir = realistic_run(tmp_path_factory.mktemp("report"))
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "base_url": SECRET_URL}))
    ev = evaluate_run(run_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse)
        paths = write_report(run_dir, ev)
    yield Written(run_dir, ev, paths)


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the report must not touch the network")


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Comparison, ReportPaths]:
    root = tmp_path_factory.mktemp("compare")
    run_a = realistic_run(root / "a", "run-a")
    run_b = realistic_run(root / "b", "run-b", worse=0.15)
    _, ev_b, cmp = compare_run_dirs(run_a, run_b)
    gates = [parse_gate("nDCG@10<-0.02")]
    failures = check_gates(cmp, gates)
    paths = write_report(
        run_b, ev_b, comparison=cmp, out_dir=root / "out", gates=gates, failures=failures
    )
    return cmp, paths


# --- files and summary.json -------------------------------------------------------------------


def test_files_are_written_into_the_run(written: Written) -> None:
    for path in (written.paths.html, written.paths.markdown, written.paths.summary):
        assert path.parent == written.run_dir
        assert path.stat().st_size > 0
    assert not list(written.run_dir.glob(".*.tmp"))  # written atomically, nothing left over


def test_summary_matches_the_evaluation(written: Written) -> None:
    summary = json.loads(written.paths.summary.read_text(encoding="utf-8"))
    ev = written.ev
    assert summary["run"]["run_id"] == "run-a"
    assert summary["primary_measure"] == "nDCG@10"
    assert summary["queries"] == {"total": N_QUERIES, "judged": N_QUERIES - len(UNJUDGED)}
    expected = {
        (r["mode"], r["setting"], r["unit"], r["measure"]): r["value"]
        for r in ev.summary.iter_rows(named=True)
    }
    seen = 0
    for entry in summary["settings"]:
        for measure, value in entry["measures"].items():
            key = (entry["mode"], entry["setting"], entry["unit"], measure)
            assert value == pytest.approx(expected[key], nan_ok=True)
            seen += 1
    assert seen == len(expected)
    # The best setting of nDCG@10 per mode is the argmax of the summary.
    for best in summary["best"]:
        if best["unit"] != "media":
            continue
        rows = ev.summary.filter(
            (pl.col("mode") == best["mode"])
            & (pl.col("unit") == "media")
            & (pl.col("measure") == "nDCG@10")
        )
        assert best["best"]["nDCG@10"]["value"] == pytest.approx(rows["value"].max())
    assert len(summary["operating_points"]) == ev.operating_points.height
    assert len(summary["threshold_check"]) == ev.threshold_check.height
    assert summary["unjudged"]["hits"] == ev.unjudged["n_unjudged"].sum()
    assert summary["unjudged"]["queries_without_judgments"] == len(UNJUDGED)


def test_summary_is_strict_json_without_secrets(written: Written) -> None:
    text = written.paths.summary.read_text(encoding="utf-8")
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    for path in (written.paths.summary, written.paths.markdown, written.paths.html):
        body = path.read_text(encoding="utf-8")
        assert "hunter2" not in body and "abc.def.ghi" not in body
    assert json.loads(text)["run"]["base_url"] == "https://api.example.com/v1"
    assert safe_url("http://127.0.0.1:8765/") == "http://127.0.0.1:8765/"


# --- the HTML page ----------------------------------------------------------------------------


class _Page(HTMLParser):
    """Collects ids, attributes that load things, script tags and text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.loads: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.csp: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = {k: v or "" for k, v in attrs}
        if "id" in values:
            self.ids.add(values["id"])
        for name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data"):
            if name in values:
                self.loads.append((tag, name, values[name]))
        if tag == "meta" and values.get("http-equiv", "").lower() == "content-security-policy":
            self.csp = values.get("content")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_html_has_every_section(written: Written, compared: tuple[Comparison, ReportPaths]) -> None:
    page = parse(written.paths.html)
    assert {k for k, _ in SECTIONS if k != "comparison"} <= page.ids
    assert "comparison" not in page.ids
    assert parse(compared[1].html).ids >= {k for k, _ in SECTIONS}
    html = written.paths.html.read_text(encoding="utf-8")
    # PR curves, hits per setting, score histograms, overlap heat map, and the quality
    # sections' intervals, fusion and cut-off curves: seven inline plots.
    assert html.count('<svg class="plot"') == 7
    for heading in ("caption", "semantic", "fts", "Operating points", "Worst queries"):
        assert heading in html


def test_html_fetches_nothing(written: Written, compared: tuple[Comparison, ReportPaths]) -> None:
    for path in (written.paths.html, compared[1].html):
        page = parse(path)
        assert page.csp == CSP
        assert "script" not in page.tags and "iframe" not in page.tags and "img" not in page.tags
        for tag, name, value in page.loads:
            # Only in-page anchors (#id, the nav and SVG <use>) and the empty data: favicon.
            assert value.startswith("#") or value == "data:,", (tag, name, value)
        html = path.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
        assert "@import" not in html
        assert not re.search(r"url\(\s*['\"]?(?!#)", html)  # only url(#clip-path) in the SVG


def test_text_is_escaped(written: Written) -> None:
    html = written.paths.html.read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert EVIL in "".join(parse(written.paths.html).text)  # shown as text, whole
    markdown = written.paths.markdown.read_text(encoding="utf-8")
    assert "<script>" not in markdown


def test_worst_queries_show_their_top_hits(written: Written) -> None:
    html = written.paths.html.read_text(encoding="utf-8")
    section = html[html.index('id="worst-queries"') : html.index('id="unjudged"')]
    worst = (
        written.ev.per_query.filter(
            (pl.col("unit") == "media")
            & (pl.col("measure") == "nDCG@10")
            & pl.col("value").is_not_null()
        )
        .group_by("mode", "setting")
        .agg(pl.col("value").min())
    )
    assert worst.height > 0
    assert section.count('class="query"') == 5 * 3  # five per mode
    assert ".jpg" in section and "raw score" in section
    assert "first relevant media at rank" in section or "no relevant media returned" in section


def test_comparison_shows_deltas_with_marks(compared: tuple[Comparison, ReportPaths]) -> None:
    cmp, paths = compared
    html = paths.html.read_text(encoding="utf-8")
    section = html[html.index('id="comparison"') : html.index('id="headline"')]
    assert "▼" in section and " *" in section  # run B is clearly worse somewhere
    assert 'class="num down"' in section
    assert "Gates failed" in section and "nDCG@10&lt;-0.02" in section
    summary = json.loads(paths.summary.read_text(encoding="utf-8"))
    assert len(summary["comparison"]["measures"]) == cmp.measures.height
    assert summary["gates"][0]["failed"] is True
    significant_drops = cmp.measures.filter(pl.col("significant") & (pl.col("delta") < 0))
    assert significant_drops.height > 0


def test_report_of_a_run_without_judgments(tmp_path: Path) -> None:
    hits, _ = realistic_hits()
    run_dir = build_run(tmp_path, hits=hits, run_id="bare")
    ev = evaluate_run(run_dir)
    paths = write_report(run_dir, ev)
    html = paths.html.read_text(encoding="utf-8")
    assert "No judgments: precision and recall are unknown." in html
    summary = json.loads(paths.summary.read_text(encoding="utf-8"))
    assert summary["queries"]["judged"] == 0
    assert all(
        v is None or not math.isnan(v)
        for entry in summary["settings"]
        for v in entry["measures"].values()
    )


# --- the commands -----------------------------------------------------------------------------

cli = CliRunner()


def test_report_command_writes_everything_and_prints_the_path(tmp_path: Path) -> None:
    run_dir = realistic_run(tmp_path)
    result = cli.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(run_dir / "report.html")
    for name in (
        "metrics.parquet",
        "distributions.parquet",
        "summary.json",
        "report.md",
        "report.html",
    ):
        assert (run_dir / name).is_file(), name
    missing = cli.invoke(app, ["report", str(tmp_path / "no-such-run")])
    assert missing.exit_code == 2 and "error:" in missing.output


def test_judge_todo_command(tmp_path: Path) -> None:
    run_dir = realistic_run(tmp_path)
    out = tmp_path / "todo.qrels"
    result = cli.invoke(app, ["judge-todo", str(run_dir), "--out", str(out), "--k", "3"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    lines = [x for x in out.read_text(encoding="utf-8").splitlines() if x and not x.startswith("#")]
    # Only the judgment-less queries have unjudged media in every top 3 here, at least.
    assert {line.split()[0] for line in lines} >= set(UNJUDGED)
    assert all(line.split()[3] == "-1" for line in lines)


def test_commands_have_help_with_an_example() -> None:
    for name in ("report", "compare", "judge-todo"):
        result = cli.invoke(app, [name, "--help"])
        assert result.exit_code == 0
        assert "Example: vlbench " + name in " ".join(result.output.split())
