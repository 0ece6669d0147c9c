"""Threshold sweeps and operating points on a hand-computable run."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from run_builder import build_run, hit, judgment, request

from runner.errors import UsageError
from runner.evaluate import Evaluation, choose_operating_point, evaluate_run

# Returned media per cut-off (nested: a looser cut-off returns a superset), per query.
RETURNED = {
    0.3: {"q1": ["m1"], "q2": []},
    0.5: {"q1": ["m1", "x1"], "q2": ["m3"]},
    0.8: {"q1": ["m1", "x1", "m2", "x2"], "q2": ["m3", "x3", "x4"]},
}
# q1: m1, m2 relevant (2); q2: m3 and m9 relevant (m9 never returned); q3 has no judgments.
JUDGMENTS = [
    judgment("q1", "m1"),
    judgment("q1", "m2", 2),
    judgment("q2", "m3"),
    judgment("q2", "m9"),
]


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r)


@pytest.fixture
def swept(tmp_path: Path) -> Evaluation:
    hits, requests = [], []
    for cutoff, per_query in RETURNED.items():
        setting = f"st={cutoff}"
        for qid, media in per_query.items():
            requests.append(request(qid, setting=setting, cutoff=cutoff))
            hits += [hit(qid, m, setting=setting, cutoff=cutoff) for m in media]
        hits += [hit("q3", "y1", setting=setting, cutoff=cutoff)]  # unjudged: counted in hits only
    return evaluate_run(build_run(tmp_path, hits=hits, judgments=JUDGMENTS, requests=requests))


def row(ev: Evaluation, cutoff: float) -> dict[str, object]:
    media = ev.sweep.filter((pl.col("unit") == "media") & (pl.col("cutoff") == cutoff))
    assert media.height == 1
    return media.row(0, named=True)


def test_macro_precision_recall_f1_per_setting(swept: Evaluation) -> None:
    loose, mid, strict = row(swept, 0.8), row(swept, 0.5), row(swept, 0.3)
    # q2 returns nothing at 0.3: precision 0 and recall 0, still averaged in.
    assert strict["precision"] == pytest.approx((1 / 1 + 0) / 2)
    assert strict["recall"] == pytest.approx((1 / 2 + 0 / 2) / 2)
    assert mid["precision"] == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert mid["recall"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert loose["precision"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    assert loose["recall"] == pytest.approx((2 / 2 + 1 / 2) / 2)
    for r in (loose, mid, strict):
        assert r["f1"] == pytest.approx(f1(r["precision"], r["recall"]))  # type: ignore[arg-type]
        assert r["n_queries"] == 2


def test_hits_count_every_query(swept: Evaluation) -> None:
    assert [row(swept, c)["hits"] for c in (0.3, 0.5, 0.8)] == [1 + 0 + 1, 2 + 1 + 1, 4 + 3 + 1]


def test_sweep_is_ordered_by_cutoff(swept: Evaluation) -> None:
    media = swept.sweep.filter(pl.col("unit") == "media")
    assert media["cutoff"].to_list() == [0.3, 0.5, 0.8]


def test_operating_point_maximises_f1(swept: Evaluation) -> None:
    point = swept.operating_points.filter(pl.col("unit") == "media").row(0, named=True)
    best = max((0.3, 0.5, 0.8), key=lambda c: row(swept, c)["f1"])  # type: ignore[arg-type, return-value]
    assert point["setting"] == f"st={best}" == "st=0.5"
    assert point["value"] == pytest.approx(f1((1 / 2 + 1) / 2, (1 / 2 + 1 / 2) / 2))


def test_operating_point_precision_at_minimum_recall(swept: Evaluation) -> None:
    points = choose_operating_point(swept.sweep, "precision@recall>=0.7")
    point = points.filter(pl.col("unit") == "media").row(0, named=True)
    assert point["setting"] == "st=0.8"  # the only setting with recall >= 0.7
    assert point["value"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    none = choose_operating_point(swept.sweep, "precision@recall>=0.9")
    assert none.filter(pl.col("unit") == "media")["setting"].to_list() == [None]


def test_unknown_objective_is_refused(swept: Evaluation) -> None:
    with pytest.raises(UsageError, match="unknown objective"):
        choose_operating_point(swept.sweep, "recall@precision>=0.5")
