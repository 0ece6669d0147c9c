"""The hybrid what-if: fusions equal to ranx's, scored like a mode, in the report and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from helpers_quality import served_run
from ranx import Run, fuse
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import SuiteError, UsageError
from runner.evaluate.fusion import (
    Fusion,
    default_fusions,
    evaluate_fusions,
    fusion_verdicts,
    media_rankings,
    parse_fusion,
)
from runner.evaluate.fusion import fuse as vl_fuse
from runner.evaluate.judgments import load_run_judgments
from runner.evaluate.measures import compute_measures
from runner.evaluate.run import evaluate_run
from runner.server.lifecycle import ServerThread
from runner.suite import load_suite

# ranx compiles its fusions with numba, which warns about its own casts.
pytestmark = pytest.mark.filterwarnings("ignore:unsafe cast")

SETTINGS = {"caption": "tst=0.5", "fts": "default", "semantic": "st=0.6"}
RANX_METHODS = {"rrf": ("rrf", None), "combsum": ("sum", "min-max"), "combmnz": ("mnz", "min-max")}
FUSIONS = [{"method": "rrf", "modes": ["fts", "semantic"], "k": 10}]


@pytest.fixture(scope="module")
def run_dir(demo_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return served_run(demo_server, tmp_path_factory.mktemp("fusion"), fusions=FUSIONS)


@pytest.fixture(scope="module")
def rankings(run_dir: Path) -> pl.DataFrame:
    hits, _ = load_run_judgments(run_dir)
    return media_rankings(hits)


def ranx_run(rankings: pl.DataFrame, mode: str, queries: set[str], by_rank: bool) -> Run:
    part = rankings.filter(
        (pl.col("mode") == mode)
        & (pl.col("setting") == SETTINGS[mode])
        & pl.col("query_id").is_in(list(queries))
    )
    run: dict[str, dict[str, float]] = {}
    for q, doc, rank, score in part.select("query_id", "doc", "rank", "score").iter_rows():
        # For RRF ranx ranks by score: hand it vlbench's order as the score.
        run.setdefault(q, {})[doc] = -float(rank) if by_rank else float(score)
    return Run.from_dict(run)


@pytest.mark.parametrize("method", ["rrf", "combsum", "combmnz"])
@pytest.mark.parametrize("modes", [("fts", "semantic"), ("caption", "fts", "semantic")])
def test_fusion_equals_ranx(rankings: pl.DataFrame, method: str, modes: tuple[str, ...]) -> None:
    # ranx needs every run to hold the same queries: those all the modes answered.
    answered = [set(rankings.filter(pl.col("mode") == m)["query_id"].to_list()) for m in modes]
    queries = set.intersection(*answered)
    assert len(queries) >= 8
    name, norm = RANX_METHODS[method]
    fusion = Fusion(method, modes, k=60)
    theirs = fuse(
        [ranx_run(rankings, m, queries, by_rank=method == "rrf") for m in modes],
        norm=norm,
        method=name,
        params={"k": 60} if method == "rrf" else None,
    ).to_dict()
    ours = vl_fuse(rankings, fusion, SETTINGS).filter(pl.col("query_id").is_in(list(queries)))
    assert ours.height == sum(len(docs) for docs in theirs.values())
    for q, doc, score in ours.select("query_id", "doc", "score").iter_rows():
        assert score == pytest.approx(theirs[q][doc], abs=1e-9)
    # And the fused ranking is the order of those scores.
    for _, part in ours.group_by("query_id"):
        assert part.sort("rank")["score"].is_sorted(descending=True)


def test_fused_mode_is_scored_like_a_mode(run_dir: Path, rankings: pl.DataFrame) -> None:
    fusion = parse_fusion("combmnz(caption,semantic)")
    fused = evaluate_fusions(run_dir, [fusion], SETTINGS)
    _, qrels = load_run_judgments(run_dir)
    ranked = vl_fuse(rankings, fusion, SETTINGS).with_columns(
        pl.lit("x").alias("mode"), pl.lit("y").alias("setting"), pl.lit("").alias("pool")
    )
    expected = compute_measures(
        ranked,
        qrels.select("query_id", pl.lit("").alias("pool"), "media_id", "grade").rename(
            {"media_id": "doc"}
        ),
        ["nDCG@10", "AP"],
    )
    got = fused.per_query.filter(pl.col("measure").is_in(["nDCG@10", "AP"]))
    assert set(got["mode"].to_list()) == {"fused:combmnz(caption,semantic)"}
    assert set(got["setting"].to_list()) == {"caption@tst=0.5+semantic@st=0.6"}
    joined = got.join(expected, on=["query_id", "measure"], suffix="_x")
    assert joined.height == expected.height > 0
    assert (joined["value"] - joined["value_x"]).abs().max() == pytest.approx(0.0, abs=1e-12)


def test_verdicts_pair_each_fusion_with_each_mode(run_dir: Path) -> None:
    ev = evaluate_run(run_dir)
    fused = evaluate_fusions(run_dir, default_fusions(["fts", "semantic"]), SETTINGS)
    settings = {"fts": "default", "semantic": "st=0.6"}
    verdicts = fusion_verdicts(ev.per_query, fused, settings, "nDCG@10", seed=3)
    assert verdicts.height == 3 * 2
    row = verdicts.filter(
        (pl.col("fusion") == "fused:rrf(fts,semantic)") & (pl.col("mode") == "fts")
    ).row(0, named=True)
    alone = ev.summary.filter(
        (pl.col("mode") == "fts") & (pl.col("unit") == "media") & (pl.col("measure") == "nDCG@10")
    )["value"][0]
    assert row["mean_mode"] == pytest.approx(alone)
    assert row["delta"] == pytest.approx(row["mean_fused"] - row["mean_mode"])
    assert row["ci_lo"] <= row["delta"] <= row["ci_hi"]
    assert (verdicts["p_holm"] >= verdicts["p"]).all()


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("rrf(fts)", "two or more", id="one-mode"),
        pytest.param("borda(fts,semantic)", "use one of", id="method"),
        pytest.param("rrf(fts,semantic,k=x)", "integer", id="k"),
        pytest.param("rrf fts semantic", "expected METHOD", id="spelling"),
    ],
)
def test_bad_fusions_are_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_fusion(text)


def test_spelling_round_trips() -> None:
    assert str(parse_fusion("RRF(fts, semantic, k=10)")) == "rrf(fts,semantic,k=10)"
    assert parse_fusion("fused:combsum(a,b)").name == "fused:combsum(a,b)"


def test_suite_fusions_reach_the_report(run_dir: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["fusion"]["best"] == "fused:rrf(fts,semantic,k=10)"  # the suite's only one
    html = (run_dir / "report.html").read_text()
    assert 'id="fusion"' in html and "fused:rrf(fts,semantic,k=10)" in html


def test_cli_fuse_option_and_its_errors(run_dir: Path, tmp_path: Path) -> None:
    args = ["report", str(run_dir), "--out", str(tmp_path)]
    done = CliRunner().invoke(app, [*args, "--fuse", "combsum(caption,fts)"])
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["mode"] for r in summary["fusion"]["summary"]][0] == "fused:combsum(caption,fts)"
    bad = CliRunner().invoke(app, [*args, "--fuse", "rrf(fts)"])
    assert bad.exit_code == 2 and "two or more" in bad.stderr


def test_suite_fusion_of_an_unknown_mode_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nqueries: [dog]\nmodes: [fts, semantic]\n"
        "fusions:\n  - {method: rrf, modes: [fts, caption]}\n"
    )
    with pytest.raises(SuiteError, match=r"s.yaml:5: fusions\[0\].modes\[1\]: unknown mode"):
        load_suite(path)


def test_default_fusions_leave_out_modes_that_share_no_query() -> None:
    queries = {"fts": {"q1", "q2"}, "semantic": {"q1", "q2"}, "visual": {"v1"}}
    groups = {f.modes for f in default_fusions(["fts", "semantic", "visual"], queries)}
    assert groups == {("fts", "semantic")}
    every = {f.modes for f in default_fusions(["fts", "semantic", "visual"])}
    assert ("fts", "visual") in every and ("fts", "semantic", "visual") in every
