"""`vlbench history`: measures over time, through DuckDB over hive-partitioned metrics files."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import polars as pl
import pytest
from run_builder import build_run, hit, judgment
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import RunError
from runner.evaluate import METRICS_SCHEMA
from runner.evaluate.history import HistoryRule, load_history
from runner.report.history import render_text, write_history_html

QUERIES = [f"q{i}" for i in range(1, 9)]
BASE = {q: 0.4 + 0.05 * i for i, q in enumerate(QUERIES)}  # per-query nDCG@10 of a normal night
# Night offsets: four quiet nights (|Δ| < min_delta), then a night that drops by 0.3.
OFFSETS = [0.0, 0.004, -0.004, 0.002, -0.3]
JITTER = {q: 0.01 * ((i % 3) - 1) for i, q in enumerate(QUERIES)}  # only on the bad night


def _metrics_rows(values: Mapping[str, float], mode: str, measure: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {
            "mode": mode,
            "setting": "default",
            "cutoff": None,
            "unit": "media",
            "query_id": q,
            "measure": measure,
            "value": v,
            "judged": True,
            "n_queries": None,
        }
        for q, v in values.items()
    ]
    rows.append(
        {
            "mode": mode,
            "setting": "default",
            "cutoff": None,
            "unit": "media",
            "query_id": None,
            "measure": measure,
            "value": sum(values.values()) / len(values),
            "judged": None,
            "n_queries": len(values),
        }
    )
    return rows


def _mean(values: Mapping[str, float]) -> float:
    return sum(values.values()) / len(values)


def _move_to_date(run_dir: Path, date: str) -> Path:
    """Move a run built by `build_run` (dated 2024-01-01) to another run_date partition."""
    dated = run_dir.parent.parent / f"run_date={date}" / run_dir.name
    if dated != run_dir:
        dated.parent.mkdir(parents=True, exist_ok=True)
        run_dir.rename(dated)
        if not any(run_dir.parent.iterdir()):
            run_dir.parent.rmdir()
    return dated


def _night(root: Path, n: int, offset: float, *, status: str = "complete") -> Path:
    run_dir = build_run(
        root,
        hits=[hit("q1", "m1", raw_score=0.2)],
        run_id=f"night-{n}",
        manifest={"status": status},
    )
    dated = _move_to_date(run_dir, f"2024-01-{n + 1:02d}")
    jitter = JITTER if offset < -0.1 else dict.fromkeys(QUERIES, 0.0)
    rows = []
    for mode in ("fts", "semantic"):
        shift = offset if mode == "semantic" else 0.0  # only semantic moves
        values = {q: BASE[q] + shift + jitter[q] for q in QUERIES}
        rows += _metrics_rows(values, mode, "nDCG@10")
    pl.DataFrame(rows, schema=METRICS_SCHEMA).write_parquet(dated / "metrics.parquet")
    return dated


@pytest.fixture
def nights(tmp_path: Path) -> Path:
    for n, offset in enumerate(OFFSETS):
        _night(tmp_path, n, offset)
    return tmp_path / "suite=test"


def test_summary_values_are_the_means_read_through_duckdb(nights: Path) -> None:
    history = load_history(nights)
    semantic = history.series.filter(pl.col("mode") == "semantic").sort("night")
    jitter = sum(JITTER.values()) / len(JITTER)  # on the bad night only
    expected = [_mean(BASE) + off + (jitter if off < -0.1 else 0.0) for off in OFFSETS]
    assert semantic["value"].to_list() == pytest.approx(expected)
    assert semantic["run_date"].to_list() == [f"2024-01-{n + 1:02d}" for n in range(len(OFFSETS))]


def test_the_night_that_moved_is_flagged_and_only_it(nights: Path) -> None:
    history = load_history(nights)
    moved = history.moved
    assert moved.select("mode", "run_id").rows() == [("semantic", "night-4")]
    row = moved.row(0, named=True)
    jitter = sum(JITTER.values()) / len(JITTER)
    assert row["delta"] == pytest.approx(OFFSETS[4] + jitter - OFFSETS[3])
    earlier = [_mean(BASE) + off for off in OFFSETS[:4]]
    mean = sum(earlier) / 4
    sigma = (sum((v - mean) ** 2 for v in earlier) / 3) ** 0.5
    assert row["hist_std"] == pytest.approx(sigma)
    assert "σ" in row["why"] and "paired t-test" in row["why"]
    assert row["n_pairs"] == len(QUERIES)


def test_rule_thresholds_change_the_verdict(nights: Path) -> None:
    # min_delta above the drop: nothing can move.
    assert load_history(nights, rule=HistoryRule(min_delta=0.5)).moved.is_empty()


def test_running_and_unevaluated_runs_are_named_and_left_out(tmp_path: Path) -> None:
    for n, offset in enumerate(OFFSETS[:3]):
        _night(tmp_path, n, offset)
    running = _night(tmp_path, 3, 0.0, status="running")
    bare = _night(tmp_path, 4, 0.0)
    (bare / "metrics.parquet").unlink()
    history = load_history(tmp_path, suite="test")
    assert set(history.series["run_id"].unique()) == {"night-0", "night-1", "night-2"}
    notes = " ".join(history.notes)
    assert "night-3" in notes and "running" in notes
    assert "night-4" in notes and "no metrics.parquet" in notes
    assert running.exists()


def test_evaluate_missing_evaluates_on_the_fly(tmp_path: Path) -> None:
    for n in range(3):
        run = build_run(
            tmp_path,
            hits=[hit("q1", "m1", raw_score=0.1), hit("q1", "m2", raw_score=0.2)],
            judgments=[judgment("q1", "m1" if n < 2 else "m9")],
            run_id=f"r{n}",
        )
        _move_to_date(run, f"2024-02-0{n + 1}")
    with pytest.raises(RunError, match="no complete run has metrics.parquet"):
        load_history(tmp_path / "suite=test")
    history = load_history(tmp_path / "suite=test", evaluate_missing=True, measures=["RR"])
    rr = history.series.sort("night")["value"].to_list()
    assert rr == pytest.approx([1.0, 1.0, 0.0])  # m1 at rank 1 relevant; then nothing relevant
    assert all("evaluated now" in n for n in history.notes)


def test_html_is_self_contained_and_text_marks_the_move(nights: Path, tmp_path: Path) -> None:
    history = load_history(nights)
    page = write_history_html(history, tmp_path / "history.html").read_text(encoding="utf-8")
    assert "<svg" in page and "Content-Security-Policy" in page
    assert not re.search(r"(src|href)=\"https?://", page)
    assert "night-4" in page
    text = render_text(history)
    assert "▼" in text and "1 series-nights moved" in text


def test_cli_history(nights: Path, tmp_path: Path) -> None:
    out = tmp_path / "h.html"
    result = CliRunner().invoke(app, ["history", str(nights), "--html", str(out)])
    assert result.exit_code == 0, result.output
    assert "nDCG@10" in result.output and out.exists()


def test_cli_history_refuses_a_missing_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["history", str(tmp_path / "nowhere" / "suite=x")])
    assert result.exit_code == 2
    assert "error:" in result.output


def _corrupt_middle(path: Path) -> None:
    """Damage the data pages but keep the footer: only reading the values finds it."""
    data = bytearray(path.read_bytes())
    for i in range(8, len(data) // 2):
        data[i] = 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"PAR1 not parquet at all PAR1"), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-30]), id="truncated"),
        pytest.param(lambda p: pl.DataFrame({"x": [1]}).write_parquet(p), id="other-columns"),
    ],
)
def test_a_corrupt_night_is_left_out_and_named(
    nights: Path, damage: Callable[[Path], object]
) -> None:
    bad = nights / "run_date=2024-01-03" / "run_id=night-2" / "metrics.parquet"
    damage(bad)
    history = load_history(nights)
    assert "night-2" not in set(history.series["run_id"])
    assert len(set(history.series["run_id"])) == len(OFFSETS) - 1
    assert any(str(bad) in note for note in history.notes)
    result = CliRunner().invoke(app, ["history", str(nights), "--html", str(nights / "h.html")])
    assert result.exit_code == 0, result.output
    assert f"note: run night-2 (2024-01-03) left out: {bad}" in result.output
    assert "Traceback" not in result.output


def test_history_of_only_corrupt_nights_exits_2_naming_a_file(tmp_path: Path) -> None:
    bad = _night(tmp_path, 0, 0.0) / "metrics.parquet"
    bad.write_bytes(b"not parquet")
    result = CliRunner().invoke(app, ["history", str(tmp_path / "suite=test")])
    assert result.exit_code == 2
    assert f"{bad}: corrupt Parquet file" in result.output
    assert "Traceback" not in result.output


def test_damage_past_a_sound_footer_is_found_and_left_out(nights: Path) -> None:
    bad = nights / "run_date=2024-01-02" / "run_id=night-1" / "metrics.parquet"
    _corrupt_middle(bad)
    history = load_history(nights)
    assert set(history.series["run_id"]) == {f"night-{n}" for n in (0, 2, 3, 4)}
    assert any(f"{bad}: corrupt Parquet file" in note for note in history.notes)
    result = CliRunner().invoke(app, ["history", str(nights)])
    assert result.exit_code == 0, result.output
    assert "night-1 (2024-01-02) left out" in result.output
    assert "Traceback" not in result.output
