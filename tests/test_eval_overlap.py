"""Overlap of two modes: RBO and Jaccard on hand-computable lists, only-in-one, wins/losses."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest
from run_builder import build_run, hit, judgment, request

from runner.evaluate import evaluate_run, jaccard_at, mode_overlap, mode_pairs, rbo

P = 0.9


def test_rbo_identical_and_disjoint() -> None:
    assert rbo(list("abcd"), list("abcd")) == pytest.approx(1.0)
    assert rbo(list("abcd"), list("wxyz")) == pytest.approx(0.0)
    assert rbo([], []) is None
    assert rbo(["a"], []) == 0.0


def test_rbo_swapped_pair() -> None:
    # X_1 = 0, X_2 = 2; s = l = 2: (1-p)/p * (0/1 p + 2/2 p^2) + (2/2) p^2
    expected = (1 - P) / P * (0 / 1 * P + 2 / 2 * P**2) + 1 * P**2
    assert rbo(["a", "b"], ["b", "a"]) == pytest.approx(expected)
    assert expected == pytest.approx(P)


def test_rbo_uneven_lengths() -> None:
    short, long = ["b", "a", "e"], ["a", "b", "c", "d"]
    # X_1..X_4 = 0, 2, 2, 2; s = 3, l = 4, X_s = X_l = 2
    head = 0 / 1 * P + 2 / 2 * P**2 + 2 / 3 * P**3 + 2 / 4 * P**4
    tail = 2 * (4 - 3) / (3 * 4) * P**4
    expected = (1 - P) / P * (head + tail) + ((2 - 2) / 4 + 2 / 3) * P**4
    assert rbo(short, long) == pytest.approx(expected)
    assert rbo(long, short) == pytest.approx(expected)  # symmetric


def test_jaccard_at_k() -> None:
    assert jaccard_at(list("abcd"), list("bae"), 10) == pytest.approx(2 / 5)  # {a,b} of {a,b,c,d,e}
    assert jaccard_at(list("abcd"), list("bae"), 2) == pytest.approx(2 / 2)  # {a,b} vs {b,a}
    assert jaccard_at(list("abcd"), list("xa"), 1) == pytest.approx(0 / 2)
    assert jaccard_at([], [], 10) is None


def test_mode_pairs_are_each_once_in_name_order() -> None:
    assert mode_pairs(["semantic", "fts", "caption", "fts"]) == [
        ("caption", "fts"),
        ("caption", "semantic"),
        ("fts", "semantic"),
    ]


def test_fts_versus_semantic_on_a_run(tmp_path: Path) -> None:
    hits = [hit("q1", m, mode="fts", score_type="bm25") for m in "abcd"]
    hits += [hit("q1", m, mode="semantic", setting="st=0.5", cutoff=0.5) for m in "bae"]
    requests = [
        request("q2", mode="fts"),
        request("q2", mode="semantic", setting="st=0.5", cutoff=0.5),
    ]
    hits += [hit("q3", "z", mode="fts", score_type="bm25")]
    requests.append(request("q3", mode="semantic", setting="st=0.5", cutoff=0.5))
    overlap = evaluate_run(build_run(tmp_path, hits=hits, requests=requests)).overlap
    rows = {r["query_id"]: r for r in overlap.iter_rows(named=True)}
    q1 = rows["q1"]
    assert (q1["mode_a"], q1["mode_b"], q1["setting_a"], q1["setting_b"]) == (
        "fts",
        "semantic",
        "default",
        "st=0.5",
    )
    assert (q1["n_a"], q1["n_b"]) == (4, 3)
    assert q1["jaccard"] == pytest.approx(2 / 5)
    assert q1["rbo"] == pytest.approx(rbo(list("bae"), list("abcd")))
    assert (q1["only_a"], q1["only_b"]) == (2, 1)
    assert (q1["only_a_examples"], q1["only_b_examples"]) == (["c", "d"], ["e"])
    assert rows["q2"]["jaccard"] is None and rows["q2"]["rbo"] is None  # both returned nothing
    assert rows["q3"]["jaccard"] == 0.0 and rows["q3"]["rbo"] == 0.0  # found by fts only
    assert rows["q3"]["only_a_examples"] == ["z"]


def test_vectorised_rbo_and_jaccard_equal_the_term_by_term_formulas() -> None:
    rng = random.Random(3)
    universe = [f"m{i}" for i in range(60)]
    lists = {}
    rows = []
    for q in range(80):
        for mode in ("fts", "semantic"):
            for setting in ("s1", "s2"):
                docs = rng.sample(universe, rng.randint(0, 40))
                lists[(mode, setting, f"q{q}")] = docs
                rows += [(mode, setting, f"q{q}", doc, i + 1) for i, doc in enumerate(docs)]
    ranked = pl.DataFrame(rows, schema=["mode", "setting", "query_id", "doc", "rank"], orient="row")
    cells = pl.DataFrame(list(lists), schema=["mode", "setting", "query_id"], orient="row")
    result = mode_overlap(ranked, cells, k=7)
    assert result.height == 80 * 2 * 2
    for r in result.iter_rows(named=True):
        a = lists[("fts", r["setting_a"], r["query_id"])]
        b = lists[("semantic", r["setting_b"], r["query_id"])]
        expected_rbo, expected_jaccard = rbo(a, b), jaccard_at(a, b, 7)
        if expected_rbo is None:
            assert r["rbo"] is None
        else:
            assert r["rbo"] == pytest.approx(expected_rbo, abs=1e-12)
        assert r["jaccard"] == (
            None if expected_jaccard is None else pytest.approx(expected_jaccard)
        )
        assert r["only_a"] == len(set(a) - set(b))
        assert r["only_a_examples"] == [m for m in a if m not in set(b)][:3]


def test_wins_losses_ties_on_a_measure(tmp_path: Path) -> None:
    # RR: q1 fts 1 vs semantic 1/2 (win), q2 fts 1/3 vs 1 (loss), q3 both 1 (tie); q4 unjudged.
    orders = {
        "q1": ("rxx", "xr"),
        "q2": ("xxr", "r"),
        "q3": ("r", "rx"),
        "q4": ("x", "x"),
    }
    hits = []
    for qid, (fts, semantic) in orders.items():
        hits += [hit(qid, f"{qid}{c}{i}", mode="fts", score_type="bm25") for i, c in enumerate(fts)]
        hits += [
            hit(qid, f"{qid}{c}{i}" if c == "x" else f"{qid}r{fts.index('r')}", mode="semantic")
            for i, c in enumerate(semantic)
        ]
    judgments = [judgment(q, f"{q}r{orders[q][0].index('r')}") for q in ("q1", "q2", "q3")]
    wins = evaluate_run(build_run(tmp_path, hits=hits, judgments=judgments)).wins
    rr = wins.filter((pl.col("measure") == "RR") & (pl.col("unit") == "media")).row(0, named=True)
    assert (rr["mode_a"], rr["mode_b"]) == ("fts", "semantic")
    assert (rr["wins"], rr["losses"], rr["ties"], rr["n_queries"]) == (1, 1, 1, 3)
    assert "NumRet" not in wins["measure"].to_list()
