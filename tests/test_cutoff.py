"""Cut-off advice (target precision or recall, bootstrap interval) and score shifts across runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers_quality import served_run
from run_builder import build_run, hit, judgment
from test_report import realistic_run
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import UsageError
from runner.evaluate.compare import compare_run_dirs
from runner.evaluate.cutoff import advise_cutoffs, score_shift, setting_pr
from runner.report import write_report
from runner.report.sections import QualityOptions
from runner.server.lifecycle import ServerThread

# Per setting, what each query returns: r* relevant, n* not. q4 is worse at st=0.5.
RETURNED = {
    0.3: {q: ["r1"] for q in ("q1", "q2", "q3", "q4")},
    0.5: {
        "q1": ["r1", "r2", "n1"],
        "q2": ["r1", "r2", "n1"],
        "q3": ["r1", "r2", "n1"],
        "q4": ["r1", "n1"],
    },
    0.7: {q: ["r1", "r2", "n1", "n2", "n3"] for q in ("q1", "q2", "q3", "q4")},
}
# Macro precision and recall by hand: (P, R) per cut-off.
EXPECTED = {0.3: (1.0, 0.5), 0.5: ((2 / 3 * 3 + 1 / 2) / 4, (3 + 0.5) / 4), 0.7: (0.4, 1.0)}


@pytest.fixture
def swept(tmp_path: Path) -> Path:
    hits: list[dict[str, Any]] = []
    for cut, answers in RETURNED.items():
        for q, media in answers.items():
            hits += [
                hit(q, f"{q}-{m}", setting=f"st={cut}", cutoff=cut, raw_score=0.1 * i)
                for i, m in enumerate(media, 1)
            ]
    judgments = [judgment(q, f"{q}-{r}") for q in ("q1", "q2", "q3", "q4") for r in ("r1", "r2")]
    judgments += [judgment(q, f"{q}-n1", 0) for q in ("q1", "q2", "q3", "q4")]
    return build_run(tmp_path, hits=hits, judgments=judgments)


def test_setting_pr_is_the_sweep_per_query(swept: Path) -> None:
    pr = setting_pr(swept)
    means = pr.group_by("cutoff").agg(pl.col("P").mean(), pl.col("R").mean()).sort("cutoff")
    for cut, p, r in means.iter_rows():
        assert (p, r) == pytest.approx(EXPECTED[cut])


@pytest.mark.parametrize(
    "target, level, cutoff",
    [
        pytest.param("precision", 0.6, 0.5, id="p0.6-most-recall"),
        pytest.param("precision", 0.8, 0.3, id="p0.8-strict"),
        pytest.param("recall", 0.9, 0.7, id="r0.9-loose"),
        pytest.param("recall", 0.8, 0.5, id="r0.8-most-precision"),
    ],
)
def test_advice_picks_the_cutoff_by_hand(
    swept: Path, target: str, level: float, cutoff: float
) -> None:
    advice, curves = advise_cutoffs(setting_pr(swept), target=target, level=level, seed=2)
    row = advice.row(0, named=True)
    assert row["cutoff"] == cutoff
    assert (row["precision"], row["recall"]) == pytest.approx(EXPECTED[cutoff])
    assert row["cutoff_lo"] <= cutoff <= row["cutoff_hi"]
    assert row["precision_lo"] <= row["precision"] <= row["precision_hi"]
    assert 0 < row["stability"] <= 1 and 0 < row["reach"] <= 1
    assert curves.height == 3


def test_unreachable_target_advises_nothing(swept: Path) -> None:
    advice, _ = advise_cutoffs(setting_pr(swept), target="recall", level=1.0)
    # Every query reaches recall 1 only at 0.7: reachable. Precision 1 at 0.3 only.
    assert advice["cutoff"][0] == 0.7
    advice, _ = advise_cutoffs(setting_pr(swept), target="precision", level=1.0)
    assert advice["cutoff"][0] == 0.3
    advice, _ = advise_cutoffs(setting_pr(swept).with_columns(pl.col("P") * 0.5), level=0.9)
    assert advice["setting"][0] is None and advice["reach"][0] == 0


@pytest.mark.parametrize("target, level", [("f1", 0.5), ("precision", 0.0), ("recall", 1.5)])
def test_bad_targets_are_refused(swept: Path, target: str, level: float) -> None:
    with pytest.raises(UsageError):
        advise_cutoffs(setting_pr(swept), target=target, level=level)


def test_score_shift_sees_relevant_scores_move(tmp_path: Path) -> None:
    run_a = realistic_run(tmp_path / "a", "run-a")
    run_b = realistic_run(tmp_path / "b", "run-b", worse=0.15)
    shift = score_shift(run_a, run_b)
    loosest = shift.filter(pl.col("setting").is_in(["tst=0.65", "sem=0.65"]))
    relevant = loosest.filter(pl.col("relevance") == "relevant")
    assert relevant["shifted"].all() and (relevant["median_b"] > relevant["median_a"]).all()
    # Non-relevant media were drawn the same in both runs: no shift at all.
    assert (loosest.filter(pl.col("relevance") == "non_relevant")["ks"] == 0).all()
    assert not score_shift(run_a, run_a)["shifted"].any()
    # In the comparison report, with the shift table.
    _, ev_b, cmp = compare_run_dirs(run_a, run_b, n_permutations=500)
    paths = write_report(
        run_b,
        ev_b,
        comparison=cmp,
        out_dir=tmp_path / "out",
        quality=QualityOptions(baseline=run_a),
    )
    summary = json.loads(paths.summary.read_text())
    assert any(r["shifted"] for r in summary["score_shift"])
    assert "Score shift of relevant and non-relevant hits" in paths.html.read_text()


@pytest.fixture(scope="module")
def served(demo_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return served_run(demo_server, tmp_path_factory.mktemp("cutoffs"))


def test_cli_report_gives_advice_per_swept_mode(served: Path, tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app,
        ["report", str(served), "--out", str(tmp_path), "--target-p", "0.3", "--target-r", "0.8"],
    )
    assert done.exit_code == 0, done.output
    advice = json.loads((tmp_path / "summary.json").read_text())["cutoff_advice"]
    assert {(r["mode"], r["target"], r["level"]) for r in advice} == {
        ("caption", "precision", 0.3),
        ("semantic", "precision", 0.3),
        ("caption", "recall", 0.8),
        ("semantic", "recall", 0.8),
    }  # fts has no cut-off: no advice
    pr = setting_pr(served)
    for row in advice:
        if row["setting"] is None:
            continue
        at = pr.filter((pl.col("mode") == row["mode"]) & (pl.col("setting") == row["setting"]))
        assert row["precision"] == pytest.approx(at["P"].mean())
        assert row["recall"] == pytest.approx(at["R"].mean())
    html = (tmp_path / "report.html").read_text()
    assert 'id="cutoffs"' in html and "same pick" in html


def test_cli_refuses_a_target_out_of_range(served: Path, tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app, ["report", str(served), "--out", str(tmp_path), "--target-p", "1.5"]
    )
    assert done.exit_code == 2 and "--target-p 1.5" in done.stderr
