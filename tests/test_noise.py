"""Gates that know the noise floor (`vlbench compare --noise`); history's band, same rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from helpers_quality import served_run
from test_history import OFFSETS, _night
from test_report import realistic_run
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import UsageError
from runner.evaluate.compare import compare_run_dirs
from runner.evaluate.compare.noise import Z, check_gates_with_noise, noise_floor
from runner.evaluate.evaluation import PER_QUERY_SCHEMA, Evaluation
from runner.evaluate.history import HistoryRule, load_history
from runner.evaluate.run import evaluate_run
from runner.report.history import render_text
from runner.server.lifecycle import ServerThread


def _evaluation(values: dict[str, float]) -> Evaluation:
    per_query = pl.DataFrame(
        {
            "mode": "semantic",
            "setting": "default",
            "cutoff": None,
            "unit": "media",
            "query_id": list(values),
            "measure": "nDCG@10",
            "value": list(values.values()),
            "judged": True,
        },
        schema=PER_QUERY_SCHEMA,
    )
    empty = pl.DataFrame()
    return Evaluation(None, ("nDCG@10",), per_query, *([empty] * 10))


def test_floor_is_the_larger_of_the_biggest_aa_delta_and_the_band() -> None:
    a = {"q1": 0.5, "q2": 0.6, "q3": 0.7, "q4": 0.2}
    b = {"q1": 0.6, "q2": 0.5, "q3": 0.7, "q4": 0.4}  # d = .1, -.1, 0, .2
    floor = noise_floor([_evaluation(a), _evaluation(b)]).row(0, named=True)
    d = [0.1, -0.1, 0.0, 0.2]
    mean = sum(d) / 4
    var = sum((x - mean) ** 2 for x in d) / 3
    assert floor["max_delta"] == pytest.approx(abs(mean))
    assert floor["band"] == pytest.approx(Z * math.sqrt(var / 4))
    assert floor["floor"] == pytest.approx(max(abs(mean), Z * math.sqrt(var / 4)))
    assert floor["n_runs"] == 2 and floor["n_queries"] == 4


def test_one_run_is_not_enough() -> None:
    with pytest.raises(UsageError, match="two or more"):
        noise_floor([_evaluation({"q1": 0.5})])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A/A runs that differ by chance (other seeds), and a run that really got worse."""
    root = tmp_path_factory.mktemp("noise")
    named = {"a": (1, 0.0), "aa2": (2, 0.0), "n1": (3, 0.0), "n2": (4, 0.0), "worse": (1, 0.15)}
    return {k: realistic_run(root / k, f"run-{k}", seed=s, worse=w) for k, (s, w) in named.items()}


def test_noise_holds_back_what_chance_explains(runs: dict[str, Path]) -> None:
    floor = noise_floor([evaluate_run(runs[k]) for k in ("n1", "n2", "a")])
    _, _, cmp = compare_run_dirs(runs["a"], runs["aa2"], n_permutations=2000)
    failures, held = check_gates_with_noise(cmp, ["nDCG@10<-0.001"], floor)
    assert failures == []
    assert held and all(h.reason for h in held)
    for h in held:
        assert not h.significant or not h.above_floor
        assert (h.floor is not None and abs(h.delta) <= h.floor) == (not h.above_floor)


def test_noise_lets_a_real_regression_through(runs: dict[str, Path]) -> None:
    floor = noise_floor([evaluate_run(runs[k]) for k in ("n1", "n2", "a")])
    _, _, cmp = compare_run_dirs(runs["a"], runs["worse"], n_permutations=2000)
    failures, _ = check_gates_with_noise(cmp, ["semantic:nDCG@10<-0.02"], floor)
    assert failures
    for f in failures:
        row = floor.filter((pl.col("mode") == f.mode) & (pl.col("setting") == f.setting))
        assert abs(f.delta) > row.filter(pl.col("measure") == "nDCG@10")["floor"][0]


def test_cli_compare_with_noise(runs: dict[str, Path], tmp_path: Path) -> None:
    noise = ["--noise", str(runs["n1"]), "--noise", str(runs["n2"])]
    base = ["compare", str(runs["a"])]
    quiet = CliRunner().invoke(
        app,
        [
            *base,
            str(runs["aa2"]),
            *noise,
            "--fail-on",
            "nDCG@10<-0.001",
            "--out",
            str(tmp_path / "q"),
        ],
    )
    assert quiet.exit_code == 0, quiet.output
    assert "held back" in quiet.stdout
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert summary["noise"]["held_back"] and summary["noise"]["floors"]
    assert "Gates held back" in (tmp_path / "q" / "report.html").read_text()
    loud = CliRunner().invoke(
        app,
        [
            *base,
            str(runs["worse"]),
            *noise,
            "--fail-on",
            "nDCG@10<-0.02",
            "--out",
            str(tmp_path / "l"),
        ],
    )
    assert loud.exit_code == 1, loud.output
    one = CliRunner().invoke(app, [*base, str(runs["aa2"]), "--noise", str(runs["n1"])])
    assert one.exit_code == 2 and "two or more" in one.stderr


def test_cli_compare_with_noise_over_served_runs(demo_server: ServerThread, tmp_path: Path) -> None:
    a, b, n1 = (served_run(demo_server, tmp_path / k, name="aa") for k in ("a", "b", "n1"))
    done = CliRunner().invoke(
        app,
        [
            "compare",
            str(a),
            str(b),
            "--noise",
            str(n1),
            "--noise",
            str(a),
            "--fail-on",
            "nDCG@10<0",
        ],
    )
    assert done.exit_code == 0, done.output
    reports = list(b.glob("compare-*/summary.json"))
    floors = json.loads(reports[0].read_text())["noise"]["floors"]
    # The local server answers the same question the same way: a floor of exactly zero.
    assert floors and all(f["floor"] == 0 for f in floors)


@pytest.fixture
def nights(tmp_path: Path) -> Path:
    for n, offset in enumerate(OFFSETS):
        _night(tmp_path, n, offset)
    return tmp_path / "suite=test"


def test_history_moves_on_the_noise_rule_and_shows_the_band(nights: Path) -> None:
    history = load_history(nights)
    semantic = history.series.filter(pl.col("mode") == "semantic").sort("night")
    quiet_deltas = [OFFSETS[i] - OFFSETS[i - 1] for i in (1, 2, 3)]
    last = semantic.row(4, named=True)
    assert last["moved"]
    assert last["floor"] == pytest.approx(max(abs(d) for d in quiet_deltas))
    previous = semantic.row(3, named=True)["value"]
    assert (last["band_lo"], last["band_hi"]) == pytest.approx(
        (previous - last["floor"], previous + last["floor"])
    )
    assert semantic["floor"][:4].is_null().all()  # fewer than 3 quiet nights before them
    text = render_text(history)
    assert "band: " in text and f"±{last['floor']:.3f}" in text
    # The older rule still flags the same night, for its own reasons.
    either = load_history(nights, rule=HistoryRule(rule="either")).moved
    assert either.select("mode", "run_id").rows() == [("semantic", "night-4")]


def test_cli_history_refuses_an_unknown_rule(nights: Path) -> None:
    done = CliRunner().invoke(app, ["history", str(nights), "--rule", "bogus"])
    assert done.exit_code == 2 and "--rule bogus" in done.stderr
