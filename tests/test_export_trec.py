"""`vlbench export RUN --format trec`: TREC run files that trec_eval scores as vlbench does."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import pytrec_eval
from helpers_quality import served_run
from run_builder import build_run, hit, judgment
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import RunError
from runner.evaluate.run import evaluate_run
from runner.export.trec import QRELS_FILE, SCORE_STEP, write_trec_runs
from runner.server.lifecycle import ServerThread

# vlbench measure -> trec_eval's name for it
TREC_NAMES = {
    "nDCG@10": "ndcg_cut_10",
    "P@10": "P_10",
    "R@100": "recall_100",
    "AP": "map",
    "RR": "recip_rank",
    "Success@10": "success_10",
}


@pytest.fixture(scope="module")
def run_dir(demo_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return served_run(demo_server, tmp_path_factory.mktemp("trec"))


def read_run(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        qid, q0, doc, _rank, score, _tag = line.split()
        assert q0 == "Q0"
        run.setdefault(qid, {})[doc] = float(score)
    return run


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        qid, _, doc, grade = line.split()
        qrels.setdefault(qid, {})[doc] = int(grade)
    return qrels


def test_pytrec_eval_gives_vlbench_measures_back(run_dir: Path, tmp_path: Path) -> None:
    paths = write_trec_runs(run_dir, tmp_path / "trec")
    ev = evaluate_run(run_dir)
    qrels = read_qrels(tmp_path / "trec" / QRELS_FILE)
    assert qrels  # the label judgments, resolved to media ids
    systems = ev.summary.filter(pl.col("unit") == "media").select("mode", "setting").unique()
    assert len(paths) == systems.height + 1  # a file per mode and setting, and the qrels
    compared = 0
    for mode, setting in systems.iter_rows():
        run = read_run(tmp_path / "trec" / f"{mode}@{setting}.run")
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, set(TREC_NAMES.values()))
        theirs = evaluator.evaluate(run)
        ours = ev.per_query.filter(
            (pl.col("mode") == mode)
            & (pl.col("setting") == setting)
            & (pl.col("unit") == "media")
            & pl.col("measure").is_in(list(TREC_NAMES))
            & pl.col("value").is_not_null()
        )
        for query_id, measure, value in ours.select("query_id", "measure", "value").iter_rows():
            if query_id not in theirs:  # returned nothing: trec_eval skips it, vlbench scores 0
                assert value == 0.0
                continue
            assert theirs[query_id][TREC_NAMES[measure]] == pytest.approx(value, abs=1e-9)
            compared += 1
    assert compared > 100


def test_scores_fall_with_rank_even_when_tied(tmp_path: Path) -> None:
    # m2 and m3 tie, m4 scores above m3 though the API ranked it below: the file keeps the order.
    run = build_run(
        tmp_path,
        hits=[
            hit("q1", "m1", raw_score=0.1),
            hit("q1", "m3", raw_score=0.2),
            hit("q1", "m2", raw_score=0.2),
            hit("q1", "m4", raw_score=0.15),
        ],
        judgments=[judgment("q1", "m2")],
    )
    write_trec_runs(run, tmp_path / "out")
    lines = (tmp_path / "out" / "semantic@default.run").read_text().splitlines()
    docs = [line.split()[2] for line in lines]
    scores = [float(line.split()[4]) for line in lines]
    assert docs == ["m1", "m3", "m2", "m4"]
    assert scores[0] == pytest.approx(0.9)
    assert scores[1] == pytest.approx(0.8)
    assert scores[2] == pytest.approx(0.8 - SCORE_STEP)  # tie broken in vlbench's order
    assert scores[3] == pytest.approx(0.8 - 2 * SCORE_STEP)  # an inversion too
    # trec_eval orders by score: RR of m2 at rank 3 is what vlbench measures.
    result = pytrec_eval.RelevanceEvaluator({"q1": {"m2": 1}}, {"recip_rank"}).evaluate(
        {"q1": dict(zip(docs, scores, strict=True))}
    )
    assert result["q1"]["recip_rank"] == pytest.approx(1 / 3)


def test_cli_writes_the_files_and_lists_them(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["export", str(run_dir), "--format", "trec", "--out", str(out), "--mode", "fts"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["fts@default.run", QRELS_FILE]
    assert str(out / "fts@default.run") in result.stdout
    assert "1 TREC run files" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--format", "trec"], "--out DIR", id="stdout"),
        pytest.param(["--format", "trec", "--out", "x", "--live"], "--out DIR", id="live"),
    ],
)
def test_cli_refuses_what_trec_cannot_do(run_dir: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["export", str(run_dir), *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_directory_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError):
        write_trec_runs(tmp_path / "nothing", tmp_path / "out")
