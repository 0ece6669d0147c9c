"""Score histograms, quantiles and the threshold check on hand-computable runs."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from run_builder import build_run, hit, judgment

from runner.evaluate import evaluate_run

INF = float("inf")


def bins(ev_distributions: pl.DataFrame, scale: str) -> dict[tuple[float, float], int]:
    chosen = ev_distributions.filter(pl.col("scale") == scale)
    return {(r["bin_lo"], r["bin_hi"]): r["count"] for r in chosen.iter_rows(named=True)}


def test_histogram_fixed_bins_with_open_ends(tmp_path: Path) -> None:
    raws = [0.01, 0.04, 0.06, 2.0, 2.5, -0.1]
    hits = [hit("q1", f"m{i}", raw_score=raw) for i, raw in enumerate(raws)]
    ev = evaluate_run(build_run(tmp_path, hits=hits))
    assert set(ev.distributions["relevance"]) == {"unjudged"}
    assert bins(ev.distributions, "raw") == {
        (-INF, 0.0): 1,  # -0.1
        (0.0, 0.05): 2,  # 0.01, 0.04
        (0.05, 0.1): 1,  # 0.06
        (1.95, 2.0): 1,  # 2.0: the upper edge belongs to the last bin
        (2.0, INF): 1,  # 2.5
    }
    # normalised = 1 - d: 0.99, 0.96, 0.94, -1.0, -1.5, 1.1 on the bins of -1..1
    assert bins(ev.distributions, "normalised") == {
        (-INF, -1.0): 1,
        (-1.0, -0.95): 1,
        (0.9, 0.95): 1,
        (0.95, 1.0): 2,
        (1.0, INF): 1,
    }


def test_split_by_relevance_and_quantiles(tmp_path: Path) -> None:
    raws = {"m1": 0.1, "m2": 0.2, "m3": 0.3, "m4": 0.4, "m5": 0.5, "u1": 0.9}
    hits = [hit("q1", m, raw_score=raw) for m, raw in raws.items()]
    judgments = [judgment("q1", m) for m in ("m1", "m2", "m3", "m4", "m5")] + [
        judgment("q1", "x", 1)
    ]
    judgments.append(judgment("q1", "u0", 0))
    ev = evaluate_run(
        build_run(tmp_path, hits=[*hits, hit("q1", "u0", raw_score=1.2)], judgments=judgments)
    )
    counts = (
        ev.distributions.filter(pl.col("scale") == "raw")
        .group_by("relevance")
        .agg(pl.col("count").sum())
    )
    assert dict(counts.iter_rows()) == {"relevant": 5, "unjudged": 1, "non_relevant": 1}
    q = ev.quantiles.filter((pl.col("relevance") == "relevant") & (pl.col("scale") == "raw"))
    by_q = dict(zip(q["q"].to_list(), q["value"].to_list(), strict=True))
    # linear interpolation over the sorted values 0.1..0.5: position q * (n - 1)
    assert by_q[0.5] == pytest.approx(0.3)
    assert by_q[0.25] == pytest.approx(0.2)
    assert by_q[0.05] == pytest.approx(0.1 + 0.05 * 4 * 0.1)
    normalised = ev.quantiles.filter(
        (pl.col("relevance") == "relevant") & (pl.col("scale") == "normalised")
    )
    assert dict(zip(normalised["q"], normalised["value"], strict=True))[0.5] == pytest.approx(
        1 - 0.3
    )


def test_threshold_check_counts_violations_and_examples(tmp_path: Path) -> None:
    raws = {"ok1": 0.1, "edge": 0.5, "noise": 0.5 + 1e-12, "bad1": 0.7, "bad2": 0.9}
    hits = [hit("q1", m, setting="st=0.5", cutoff=0.5, raw_score=raw) for m, raw in raws.items()]
    hits += [hit("q1", "fine", setting="st=0.8", cutoff=0.8, raw_score=0.3)]
    hits += [
        hit("q1", "f", mode="fts", score_type="bm25", raw_score=3.0)
    ]  # no cut-off: not checked
    check = evaluate_run(build_run(tmp_path, hits=hits)).threshold_check
    assert check["setting"].to_list() == ["st=0.5", "st=0.8"]
    strict = check.row(0, named=True)
    assert strict["direction"] == "<="
    assert strict["n_hits"] == 5
    assert strict["n_violations"] == 2
    assert strict["examples"] == ["bad2", "bad1"]  # furthest beyond the cut-off first
    assert strict["n_violations_opposite"] == 1  # only 0.1 is below 0.5
    assert strict["opposite_fits_better"] is True  # 1 < 2: flag the direction as suspect
    loose = check.row(1, named=True)
    assert (loose["n_violations"], loose["examples"], loose["opposite_fits_better"]) == (
        0,
        [],
        False,
    )


def test_threshold_check_flags_a_server_reading_the_cutoff_the_other_way(tmp_path: Path) -> None:
    # A server that keeps distances >= the cut-off: every hit violates the contract's reading.
    hits = [
        hit("q1", f"m{i}", setting="st=0.3", cutoff=0.3, raw_score=0.3 + i / 10)
        for i in range(1, 6)
    ]
    row = evaluate_run(build_run(tmp_path, hits=hits)).threshold_check.row(0, named=True)
    assert (row["n_violations"], row["n_violations_opposite"], row["opposite_fits_better"]) == (
        5,
        0,
        True,
    )
    assert len(row["examples"]) == 5
