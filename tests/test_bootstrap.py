"""Bootstrap confidence intervals: coverage, seeding, the report's and compare's intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers_quality import served_run
from test_report import realistic_run
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import UsageError
from runner.evaluate.bootstrap import bootstrap_ci, paired_bootstrap_ci, summary_intervals
from runner.evaluate.compare import compare_run_dirs
from runner.evaluate.run import evaluate_run
from runner.server.lifecycle import ServerThread


def test_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    trials = 300
    for trial in range(trials):
        sample = rng.binomial(1, 0.3, size=60).astype(float)
        lo, hi = bootstrap_ci(sample, n_resamples=800, seed=trial)
        covered += lo <= 0.3 <= hi
    assert 0.90 <= covered / trials <= 0.99


def test_same_seed_same_interval_and_bounds_around_the_mean() -> None:
    values = [0.1, 0.9, 0.4, 0.4, 0.7, 0.0, 1.0, 0.3]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)
    lo, hi = bootstrap_ci(values)
    assert min(values) <= lo < float(np.mean(values)) < hi <= max(values)
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)  # no spread, no width


def test_paired_interval_is_that_of_the_differences() -> None:
    a = [0.2, 0.5, 0.1, 0.8, 0.4, 0.6]
    b = [0.3, 0.7, 0.2, 0.8, 0.6, 0.9]
    d = [y - x for x, y in zip(a, b, strict=True)]
    assert paired_bootstrap_ci(a, b, seed=1) == pytest.approx(bootstrap_ci(d, seed=1))
    lo, _ = paired_bootstrap_ci(a, b, seed=1)
    assert lo >= 0.0  # b never below a: the interval cannot reach below 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param({"n_resamples": 0}, "at least 1", id="resamples"),
        pytest.param({"level": 1.0}, "within", id="level"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        bootstrap_ci([1.0, 2.0], **kwargs)  # type: ignore[arg-type]


def test_summary_intervals_hold_the_summary_means(tmp_path: Path) -> None:
    ev = evaluate_run(realistic_run(tmp_path))
    intervals = summary_intervals(ev.per_query)
    joined = intervals.join(
        ev.summary, on=["mode", "setting", "unit", "measure"], suffix="_s", how="inner"
    ).filter(pl.col("value").is_not_null())
    assert joined.height == ev.summary.filter(pl.col("value").is_not_null()).height
    assert (joined["value"] - joined["value_s"]).abs().max() == pytest.approx(0.0, abs=1e-12)
    assert (joined["n_queries"] == joined["n_queries_s"]).all()
    assert (
        (joined["ci_lo"] <= joined["value"] + 1e-12) & (joined["value"] <= joined["ci_hi"] + 1e-12)
    ).all()


def test_compare_deltas_carry_intervals(tmp_path: Path) -> None:
    run_a = realistic_run(tmp_path / "a", "run-a")
    run_b = realistic_run(tmp_path / "b", "run-b", worse=0.15)
    _, _, cmp = compare_run_dirs(run_a, run_b, n_permutations=2000)
    rows = cmp.measures.filter(pl.col("n_pairs") > 1)
    assert (
        (rows["ci_lo"] <= rows["delta"] + 1e-12) & (rows["delta"] <= rows["ci_hi"] + 1e-12)
    ).all()
    # A strong, significant drop: its interval lies below 0.
    strong = rows.filter(pl.col("significant") & (pl.col("delta") < -0.1))
    assert strong.height > 0 and (strong["ci_hi"] < 0).all()
    # No change at all (fts is identical in both runs): a zero-width interval at 0.
    fts = rows.filter(pl.col("mode") == "fts")
    assert (fts["ci_lo"] == 0).all() and (fts["ci_hi"] == 0).all()


@pytest.fixture(scope="module")
def reported(demo_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = served_run(demo_server, tmp_path_factory.mktemp("intervals"))
    done = CliRunner().invoke(app, ["report", str(run_dir)])
    assert done.exit_code == 0, done.output
    return run_dir


def test_report_has_an_interval_for_every_headline_measure(reported: Path) -> None:
    summary = json.loads((reported / "summary.json").read_text())
    rows = summary["intervals"]["rows"]
    keys = {(r["mode"], r["setting"], r["measure"]) for r in rows}
    for setting in summary["settings"]:
        if setting["unit"] != "media":
            continue
        for measure, value in setting["measures"].items():
            if value is not None:
                assert (setting["mode"], setting["setting"], measure) in keys
    for r in rows:
        assert r["ci_lo"] <= r["value"] + 1e-12 <= r["ci_hi"] + 2e-12
    html = (reported / "report.html").read_text()
    assert 'id="intervals"' in html and "95% CI" in html
    assert "## Confidence intervals" in (reported / "report.md").read_text()


def test_cli_compare_prints_the_interval_of_each_delta(reported: Path, tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app, ["compare", str(reported), str(reported), "--out", str(tmp_path)]
    )
    assert done.exit_code == 0, done.output
    assert "95% CI of Δ" in done.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all("ci_lo" in row for row in summary["comparison"]["measures"])
