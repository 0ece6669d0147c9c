"""evaluate_run end to end on synthetic runs: means, flags, clusters, files, odd runs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import polars as pl
import pytest
from run_builder import build_run, hit, judgment, request

from runner.errors import RunError
from runner.evaluate import (
    DISTRIBUTIONS_SCHEMA,
    METRICS_SCHEMA,
    OPERATING_POINTS_SCHEMA,
    OVERLAP_SCHEMA,
    PER_QUERY_SCHEMA,
    QUANTILES_SCHEMA,
    QUERIES_SCHEMA,
    SUMMARY_SCHEMA,
    SWEEP_SCHEMA,
    THRESHOLD_CHECK_SCHEMA,
    UNJUDGED_SCHEMA,
    WINS_SCHEMA,
    Evaluation,
    evaluate_run,
    read_metrics,
    write_evaluation,
)
from runner.schema import HITS_FILE

SCHEMAS = {
    "per_query": PER_QUERY_SCHEMA,
    "summary": SUMMARY_SCHEMA,
    "sweep": SWEEP_SCHEMA,
    "operating_points": OPERATING_POINTS_SCHEMA,
    "distributions": DISTRIBUTIONS_SCHEMA,
    "quantiles": QUANTILES_SCHEMA,
    "threshold_check": THRESHOLD_CHECK_SCHEMA,
    "overlap": OVERLAP_SCHEMA,
    "wins": WINS_SCHEMA,
    "unjudged": UNJUDGED_SCHEMA,
    "queries": QUERIES_SCHEMA,
}


def small_run(tmp_path: Path) -> Path:
    """q1 finds its relevant media at rank 2; q2 returns nothing; q3 has no judgments."""
    hits = [
        hit("q1", "x1", raw_score=0.2),
        hit("q1", "r1", raw_score=0.3),
        hit("q3", "y1", raw_score=0.1),
    ]
    hits += [hit("q1", "r1", mode="fts", score_type="bm25", raw_score=4.0)]
    requests = [request("q2"), request("q2", mode="fts"), request("q3", mode="fts")]
    judgments = [judgment("q1", "r1"), judgment("q2", "r2")]
    return build_run(tmp_path, hits=hits, judgments=judgments, requests=requests)


def summary_value(
    ev: Evaluation, mode: str, measure: str, unit: str = "media"
) -> tuple[float, int]:
    chosen = ev.summary.filter(
        (pl.col("mode") == mode) & (pl.col("measure") == measure) & (pl.col("unit") == unit)
    )
    return chosen["value"].item(), chosen["n_queries"].item()


def test_every_frame_has_its_schema(tmp_path: Path) -> None:
    ev = evaluate_run(small_run(tmp_path))
    for field in dataclasses.fields(ev):
        if field.name in SCHEMAS:
            assert getattr(ev, field.name).schema == SCHEMAS[field.name], field.name
    assert ev.run_id == "test-run"


def test_means_use_every_judged_query_including_empty_answers(tmp_path: Path) -> None:
    ev = evaluate_run(small_run(tmp_path))
    value, n = summary_value(ev, "semantic", "RR")
    assert value == pytest.approx((1 / 2 + 0) / 2)  # q2 returned nothing: 0
    assert n == 2
    value, n = summary_value(ev, "fts", "RR")
    assert value == pytest.approx((1 / 1 + 0) / 2)
    assert n == 2
    # NumRet needs no judgments: averaged over all three queries.
    value, n = summary_value(ev, "semantic", "NumRet")
    assert value == pytest.approx((2 + 0 + 1) / 3)
    assert n == 3


def test_queries_without_judgments_are_flagged(tmp_path: Path) -> None:
    ev = evaluate_run(small_run(tmp_path))
    q3 = ev.per_query.filter((pl.col("query_id") == "q3") & (pl.col("mode") == "semantic"))
    assert not q3["judged"].any()
    values = dict(zip(q3["measure"], q3["value"], strict=False))
    assert values["AP"] is None
    assert values["NumRet"] == 1.0
    assert ev.queries.rows() == [
        ("q1", "text of q1", True, 1, 1),
        ("q2", "text of q2", True, 1, 1),
        ("q3", "text of q3", False, 0, 0),
    ]


def test_cluster_level_grade_is_the_best_member(tmp_path: Path) -> None:
    hits = [
        hit("q1", "u1", cluster_id="cB", cluster_rank=1),
        hit("q1", "m1", cluster_id="cA", cluster_rank=2),
        hit("q2", "m2", cluster_id="cA", cluster_rank=1),  # tells the run that m2 is in cA
    ]
    judgments = [judgment("q1", "m1", 0), judgment("q1", "m2", 2)]
    ev = evaluate_run(build_run(tmp_path, hits=hits, judgments=judgments))
    q1 = ev.per_query.filter((pl.col("query_id") == "q1") & (pl.col("unit") == "cluster"))
    values = dict(zip(q1["measure"], q1["value"], strict=True))
    # cA: max(0, 2) = 2 at rank 2; cB unjudged at rank 1; the ideal puts cA first.
    assert values["nDCG@10"] == pytest.approx((2 / math.log2(3)) / (2 / math.log2(2)))
    assert values["RR"] == pytest.approx(1 / 2)
    assert values["Judged@10"] == pytest.approx(1 / 10)
    assert values["NumRet"] == 2.0
    media = ev.per_query.filter((pl.col("query_id") == "q1") & (pl.col("unit") == "media"))
    assert dict(zip(media["measure"], media["value"], strict=True))["RR"] == 0.0  # m1 is grade 0


def test_write_and_read_metrics(tmp_path: Path) -> None:
    run_dir = small_run(tmp_path)
    ev = evaluate_run(run_dir)
    metrics_path, distributions_path = write_evaluation(ev, run_dir)
    metrics = read_metrics(run_dir)
    assert metrics.schema == METRICS_SCHEMA
    assert metrics.height == ev.per_query.height + ev.summary.height
    means = metrics.filter(pl.col("query_id").is_null())
    assert means.drop("query_id", "judged").equals(
        ev.summary.select(means.drop("query_id", "judged").columns)
    )
    assert pl.read_parquet(distributions_path).equals(ev.distributions)
    assert metrics_path.name == "metrics.parquet"


def test_a_run_without_hits_evaluates(tmp_path: Path) -> None:
    run_dir = build_run(tmp_path, judgments=[judgment("q1", "m1")], requests=[request("q1")])
    ev = evaluate_run(run_dir)
    assert set(ev.per_query.filter(pl.col("measure") != "NumRet")["value"]) == {0.0}
    assert ev.overlap.is_empty() and ev.distributions.is_empty()


def test_missing_or_corrupt_hits_are_run_errors(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a run directory"):
        evaluate_run(tmp_path)
    run_dir = small_run(tmp_path)
    (run_dir / HITS_FILE).write_bytes(b"not parquet")
    with pytest.raises(RunError, match="corrupt Parquet"):
        evaluate_run(run_dir)
    with pytest.raises(RunError, match="was the run evaluated"):
        read_metrics(run_dir)
