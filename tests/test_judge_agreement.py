"""Cohen's κ and Krippendorff's α (ordinal) against textbook values and an independent package."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from runner.judge.agreement import agreement, cohen_kappa, krippendorff_alpha_ordinal

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the example with four
# observers, twelve units, values 1-5 and missing data: α ordinal = 0.815 (nominal 0.743).
NAN = math.nan
K2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


def _units(data: list[list[float]]) -> list[list[int]]:
    return [[int(r[u]) for r in data if not math.isnan(r[u])] for u in range(len(data[0]))]


def test_kappa_textbook_example() -> None:
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15.
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    p_o = (20 + 15) / 50
    p_e = (25 / 50) * (30 / 50) + (25 / 50) * (20 / 50)
    assert cohen_kappa(a, b) == pytest.approx((p_o - p_e) / (1 - p_e))
    assert cohen_kappa(a, b) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        pytest.param([0, 1, 2, 3], [0, 1, 2, 3], 1.0, id="perfect"),
        pytest.param([0, 0, 0], [0, 0, 0], None, id="no-variation"),
        pytest.param([2], [2], None, id="one-item"),
        pytest.param([0, 1, 0, 1], [1, 0, 1, 0], -1.0, id="always-opposite"),
    ],
)
def test_kappa_edges(a: list[int], b: list[int], expected: float | None) -> None:
    value = cohen_kappa(a, b)
    assert value == (pytest.approx(expected) if expected is not None else None)


def test_alpha_textbook_example() -> None:
    assert krippendorff_alpha_ordinal(_units(K2011)) == pytest.approx(0.815, abs=5e-4)


def test_alpha_equals_the_krippendorff_package_on_random_data() -> None:
    krippendorff = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(7)
    for trial in range(20):
        raters, items = int(rng.integers(2, 6)), int(rng.integers(5, 40))
        truth = rng.integers(0, 4, items)
        noise = rng.integers(-1, 2, (raters, items)) * (rng.random((raters, items)) < 0.4)
        data = np.clip(truth + noise, 0, 3).astype(float)
        data[rng.random((raters, items)) < 0.2] = np.nan  # missing labels
        ours = krippendorff_alpha_ordinal(_units(data.tolist()))
        theirs = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal")
        assert ours == pytest.approx(theirs, abs=1e-9), trial


def _standing(rows: list[tuple[str, str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "rater": pl.String,
            "query_id": pl.String,
            "media_id": pl.String,
            "grade": pl.Int32,
        },
        orient="row",
    )


def test_agreement_per_query_and_overall() -> None:
    rows = [("ana", "q1", f"m{i}", g) for i, g in enumerate([0, 1, 2, 3])]
    rows += [("bo", "q1", f"m{i}", g) for i, g in enumerate([0, 1, 2, 3])]  # q1: identical
    rows += [("ana", "q2", f"m{i}", g) for i, g in enumerate([0, 3, 0, 3])]
    rows += [("bo", "q2", f"m{i}", g) for i, g in enumerate([3, 0, 3, 0])]  # q2: opposite
    rows += [("ana", "q3", "only-ana", 2)]  # graded once: not pairable
    result = agreement(_standing(rows))
    assert result.raters == ("ana", "bo") and result.n_items == 8
    per_query = {r["query_id"]: r for r in result.per_query.to_dicts()}
    assert per_query["q1"]["kappa"] == pytest.approx(1.0)
    assert per_query["q1"]["alpha"] == pytest.approx(1.0)
    assert per_query["q2"]["kappa"] == pytest.approx(-1.0)
    assert "q3" not in per_query
    a = [0, 1, 2, 3, 0, 3, 0, 3]
    b = [0, 1, 2, 3, 3, 0, 3, 0]
    assert result.kappa == pytest.approx(cohen_kappa(a, b))
    assert result.alpha == pytest.approx(krippendorff_alpha_ordinal(list(zip(a, b, strict=True))))
    (only,) = result.pairs  # two raters: one pair, the same κ
    assert (only.rater_a, only.rater_b, only.n_items) == ("ana", "bo", 8)
    assert only.kappa == result.kappa


def test_three_raters_have_alpha_and_a_kappa_for_each_pair() -> None:
    rows = [
        (r, "q1", f"m{i}", (i + (r == "cy")) % 4) for r in ("ana", "bo", "cy") for i in range(6)
    ]
    rows += [("ana", "q2", "m9", 1), ("dee", "q2", "m9", 1)]  # dee shares one item, with ana
    result = agreement(_standing(rows))
    assert result.kappa is None and result.alpha is not None
    assert len(result.raters) == 4
    grades = {(r, m): g for r, _, m, g in rows}
    pairs = {(p.rater_a, p.rater_b): p for p in result.pairs}
    assert set(pairs) == {("ana", "bo"), ("ana", "cy"), ("bo", "cy"), ("ana", "dee")}
    for (a, b), pair in pairs.items():
        shared = sorted(m for (r, m) in grades if r == a and (b, m) in grades)
        assert pair.n_items == len(shared)
        expected = cohen_kappa([grades[a, m] for m in shared], [grades[b, m] for m in shared])
        assert pair.kappa == (None if expected is None else pytest.approx(expected))
    assert pairs["ana", "bo"].kappa == pytest.approx(1.0)  # identical grades
    assert pairs["ana", "cy"].kappa is not None and pairs["ana", "cy"].kappa < 0.5
