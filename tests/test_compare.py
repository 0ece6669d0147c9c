"""Comparison of two runs: paired statistics on hand-computable cases, gates, and the CLI."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from run_builder import build_run, hit, judgment
from scipy import stats
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import UsageError
from runner.evaluate import evaluation as ev_schemas
from runner.evaluate.compare import (
    Comparison,
    Gate,
    check_gates,
    cohens_dz,
    compare_runs,
    holm,
    paired_t_test,
    parse_gate,
    randomisation_test,
    rank_displacement,
    score_drift,
)
from runner.evaluate.evaluation import Evaluation
from runner.evaluate.overlap import rbo

# --- a hand-made Evaluation -------------------------------------------------------------------


def _empty(schema: pl.Schema) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def evaluation(
    values: dict[str, Sequence[float | None]],
    *,
    measure: str = "nDCG@10",
    mode: str = "semantic",
    setting: str = "default",
    run_id: str = "run",
    extra: Sequence[tuple[str, dict[str, Sequence[float | None]]]] = (),
) -> Evaluation:
    """An Evaluation whose per_query holds `values[query_id] = [value]` for one measure.

    `extra` adds (measure, values) pairs for more measures of the same mode and setting.
    """
    rows = []
    for name, table in [(measure, values), *extra]:
        for query_id, (value,) in table.items():
            rows.append(
                {
                    "mode": mode,
                    "setting": setting,
                    "cutoff": None,
                    "unit": "media",
                    "query_id": query_id,
                    "measure": name,
                    "value": value,
                    "judged": value is not None,
                }
            )
    per_query = pl.DataFrame(rows, schema=ev_schemas.PER_QUERY_SCHEMA)
    queries = pl.DataFrame(
        {
            "query_id": list(values),
            "query_text": [f"text of {q}" for q in values],
            "judged": [v[0] is not None for v in values.values()],
            "n_judged": [1] * len(values),
            "n_relevant": [1] * len(values),
        },
        schema=ev_schemas.QUERIES_SCHEMA,
    )
    return Evaluation(
        run_id=run_id,
        measures=tuple(dict.fromkeys([measure, *(m for m, _ in extra)])),
        per_query=per_query,
        summary=_empty(ev_schemas.SUMMARY_SCHEMA),
        sweep=_empty(ev_schemas.SWEEP_SCHEMA),
        operating_points=_empty(ev_schemas.OPERATING_POINTS_SCHEMA),
        distributions=_empty(ev_schemas.DISTRIBUTIONS_SCHEMA),
        quantiles=_empty(ev_schemas.QUANTILES_SCHEMA),
        threshold_check=_empty(ev_schemas.THRESHOLD_CHECK_SCHEMA),
        overlap=_empty(ev_schemas.OVERLAP_SCHEMA),
        wins=_empty(ev_schemas.WINS_SCHEMA),
        unjudged=_empty(ev_schemas.UNJUDGED_SCHEMA),
        queries=queries,
    )


def by_query(values: Sequence[float]) -> dict[str, Sequence[float | None]]:
    return {f"q{i}": [v] for i, v in enumerate(values)}


# --- statistics on tiny cases -----------------------------------------------------------------


A = [0.50, 0.70, 0.90, 0.40, 0.80]
B = [0.40, 0.70, 0.60, 0.20, 0.85]


def test_delta_and_means_over_paired_queries() -> None:
    cmp = compare_runs(evaluation(by_query(A)), evaluation(by_query(B)))
    row = cmp.measures.row(0, named=True)
    assert row["n_pairs"] == len(A)
    assert row["mean_a"] == pytest.approx(sum(A) / len(A))
    assert row["mean_b"] == pytest.approx(sum(B) / len(B))
    assert row["delta"] == pytest.approx(sum(B) / len(B) - sum(A) / len(A))


def test_t_statistic_is_its_formula_and_agrees_with_scipy() -> None:
    d = [b - a for a, b in zip(A, B, strict=True)]
    expected_t = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(len(d)))
    t, p = paired_t_test(A, B)
    assert t == pytest.approx(expected_t)
    assert p == pytest.approx(2 * stats.t.sf(abs(expected_t), df=len(d) - 1))
    reference = stats.ttest_rel(B, A)
    assert (t, p) == pytest.approx((float(reference.statistic), float(reference.pvalue)))


def test_t_test_degenerate_cases() -> None:
    assert paired_t_test([0.5, 0.5], [0.5, 0.5]) == (0.0, 1.0)  # nothing moved
    assert paired_t_test([0.5, 0.6], [0.4, 0.5]) == (-math.inf, 0.0)  # all moved by -0.1
    t, p = paired_t_test([0.5], [0.4])  # one pair: no spread to estimate
    assert math.isnan(t) and math.isnan(p)


def test_randomisation_exact_over_all_sign_flips() -> None:
    # d = (1, 2, 3): the 8 sign vectors give |sum| in {6, 4, 2, 0, 0, 2, 4, 6}; two reach 6.
    assert randomisation_test([0, 0, 0], [1, 2, 3]) == pytest.approx(2 / 2**3)
    # d = (1, -1, 2, 0.5): |sum| = 2.5; sign vectors reaching it: the identity, its negation,
    # and the ones flipping the 0.5 and 1 / -1 pair: enumerate to get the formula's count.
    d = [1.0, -1.0, 2.0, 0.5]
    observed = abs(sum(d))
    flips = [
        abs(sum(s * x for s, x in zip(signs, d, strict=True)))
        for signs in np.array(np.meshgrid(*[[-1, 1]] * len(d))).T.reshape(-1, len(d))
    ]
    expected = sum(f >= observed - 1e-12 for f in flips) / 2 ** len(d)
    assert randomisation_test([0.0] * 4, d) == pytest.approx(expected)


def test_randomisation_sampled_is_seeded_and_bounded_below() -> None:
    n = 20  # 2^20 sign vectors > 1000: sampled
    a, b = [0.0] * n, [1.0] * n
    p = randomisation_test(a, b, n_permutations=1000, seed=7)
    # Only the all-plus and all-minus vectors reach |sum| = n (chance 2 / 2^20 per draw).
    assert p == pytest.approx(1 / (1000 + 1))
    noisy = np.random.default_rng(1).normal(0, 1, n).tolist()
    assert randomisation_test(a, noisy, n_permutations=500, seed=3) == randomisation_test(
        a, noisy, n_permutations=500, seed=3
    )


def test_randomisation_no_difference_is_one() -> None:
    assert randomisation_test([0.2, 0.4], [0.2, 0.4]) == 1.0
    assert math.isnan(randomisation_test([], []))


def test_holm_adjustment() -> None:
    # Sorted: 0.005 x 4, 0.01 x 3, 0.03 x 2, 0.04 x 1, each at least the one before.
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.01 * 3, 0.03 * 2, 0.03 * 2, 0.005 * 4])
    with_nan = holm([0.02, math.nan, 0.5])  # NaN is not counted: m = 2
    assert with_nan[0] == pytest.approx(0.02 * 2)
    assert math.isnan(with_nan[1])
    assert with_nan[2] == pytest.approx(max(0.04, min(1.0, 0.5 * 1)))
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1


def test_cohens_dz() -> None:
    d = [b - a for a, b in zip(A, B, strict=True)]
    assert cohens_dz(A, B) == pytest.approx(statistics.mean(d) / statistics.stdev(d))
    assert cohens_dz([0.1, 0.2], [0.1, 0.2]) == 0.0
    assert math.isnan(cohens_dz([0.1], [0.3]))


def test_comparison_columns_match_the_functions() -> None:
    cmp = compare_runs(evaluation(by_query(A)), evaluation(by_query(B)))
    row = cmp.measures.row(0, named=True)
    t, p = paired_t_test(A, B)
    assert row["t"] == pytest.approx(t)
    assert row["p_t"] == pytest.approx(p)
    assert row["p_randomisation"] == pytest.approx(randomisation_test(A, B))
    assert row["effect_size"] == pytest.approx(cohens_dz(A, B))
    assert row["p_randomisation_holm"] == pytest.approx(row["p_randomisation"])  # one measure


def test_holm_is_across_measures_of_one_setting() -> None:
    worse = [a - 0.3 for a in A]
    ev_a = evaluation(by_query(A), extra=[("P@10", by_query(A))])
    ev_b = evaluation(by_query(worse), extra=[("P@10", by_query(B))])
    cmp = compare_runs(ev_a, ev_b)
    table = {r["measure"]: r for r in cmp.measures.iter_rows(named=True)}
    expected = holm([table["nDCG@10"]["p_randomisation"], table["P@10"]["p_randomisation"]])
    assert [table["nDCG@10"]["p_randomisation_holm"], table["P@10"]["p_randomisation_holm"]] == (
        pytest.approx(expected)
    )


def test_unpaired_queries_are_counted_not_paired() -> None:
    ev_a = evaluation({"q1": [0.5], "q2": [0.6], "q3": [None], "only-a": [0.9]})
    ev_b = evaluation({"q1": [0.4], "q2": [0.6], "q3": [0.7], "only-b": [0.1]})
    row = compare_runs(ev_a, ev_b).measures.row(0, named=True)
    assert row["n_pairs"] == 2  # q1, q2 (q3 has no judgments in A)
    assert (row["n_only_a"], row["n_only_b"]) == (1, 2)
    assert row["delta"] == pytest.approx((0.4 + 0.6) / 2 - (0.5 + 0.6) / 2)


def test_regressions_are_the_largest_drops_first() -> None:
    cmp = compare_runs(evaluation(by_query(A)), evaluation(by_query(B)), top_regressions=2)
    deltas = {f"q{i}": b - a for i, (a, b) in enumerate(zip(A, B, strict=True))}
    worst = sorted(deltas, key=deltas.__getitem__)[:2]  # q2 (-0.3), q3 (-0.2)
    assert cmp.regressions["query_id"].to_list() == worst
    assert cmp.regressions["delta"].to_list() == pytest.approx([deltas[q] for q in worst])


# --- what the runs returned -------------------------------------------------------------------


def _displacement_rbo(a: list[str], b: list[str], p: float = 0.9) -> float | None:
    """The rbo column of rank_displacement for one query with rankings a and b."""
    frames = [
        pl.DataFrame(
            {
                "mode": "m",
                "setting": "s",
                "query_id": "q",
                "media_id": items,
                "rank": range(1, len(items) + 1),
            },
            schema={
                "mode": pl.String,
                "setting": pl.String,
                "query_id": pl.String,
                "media_id": pl.String,
                "rank": pl.Int64,
            },
        )
        for items in (a, b)
    ]
    value: float | None = rank_displacement(frames[0], frames[1], p=p)["rbo"][0]
    return value


def test_rbo_hand_cases() -> None:
    p = 0.9
    assert _displacement_rbo(["x", "y", "z"], ["x", "y", "z"], p) == pytest.approx(1.0)
    assert _displacement_rbo(["x", "y"], ["u", "v"], p) == pytest.approx(0.0)
    # Swapped pair: X_1 = 0, X_2 = 2 -> (1-p)/p * (2/2 p^2) + (2/2) p^2 = p.
    assert _displacement_rbo(["x", "y"], ["y", "x"], p) == pytest.approx((1 - p) / p * p**2 + p**2)
    # Uneven, agreeing prefix: extrapolation assumes the agreement goes on: 1.
    assert _displacement_rbo(["x"], ["x", "y"], p) == pytest.approx(1.0)
    assert _displacement_rbo(["x"], [], p) == 0.0


def test_rbo_agrees_with_the_overlap_module() -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        pool = [f"m{i}" for i in range(30)]
        a = list(rng.permutation(pool)[: rng.integers(1, 25)])
        b = list(rng.permutation(pool)[: rng.integers(1, 25)])
        assert _displacement_rbo(a, b) == pytest.approx(rbo(a, b))


def test_rank_displacement_per_query() -> None:
    hits_a = pl.DataFrame(
        {
            "mode": ["fts"] * 3,
            "setting": ["default"] * 3,
            "query_id": ["q1"] * 3,
            "media_id": ["m1", "m2", "m3"],
            "rank": [1, 2, 3],
        }
    )
    hits_b = hits_a.with_columns(pl.Series("media_id", ["m3", "m2", "m4"]))
    row = rank_displacement(hits_a, hits_b, k=2).row(0, named=True)
    assert (row["n_a"], row["n_b"], row["n_common"]) == (3, 3, 2)
    # m2 stays at 2, m3 moves 3 -> 1.
    assert row["mean_abs_rank_change"] == pytest.approx((0 + 2) / 2)
    # top 2: {m1, m2} vs {m3, m2}: one shared of three.
    assert row["jaccard"] == pytest.approx(1 / 3)
    assert row["rbo"] == pytest.approx(rbo(["m1", "m2", "m3"], ["m3", "m2", "m4"]))


def test_score_drift_ks_and_quantiles() -> None:
    base = {"mode": ["semantic"] * 4, "setting": ["default"] * 4}
    hits_a = pl.DataFrame({**base, "score": [0.1, 0.2, 0.3, 0.4]})
    hits_b = pl.DataFrame({**base, "score": [0.6, 0.7, 0.8, 0.9]})
    drift = score_drift(hits_a, hits_b, quantiles=(0.5,))
    row = drift.row(0, named=True)
    assert row["ks"] == pytest.approx(1.0)  # the two samples do not overlap
    assert row["shift"] == pytest.approx(statistics.median([0.6, 0.7, 0.8, 0.9]) - 0.25)


# --- gates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, gate",
    [
        pytest.param("ndcg@10<-0.02", Gate("nDCG@10", "<", -0.02), id="lower-case"),
        pytest.param(" nDCG@10 <= -0.02 ", Gate("nDCG@10", "<=", -0.02), id="spaces"),
        pytest.param("map>=0.1", Gate("AP", ">=", 0.1), id="alias"),
        pytest.param("semantic:P@10<-5e-2", Gate("P@10", "<", -0.05, mode="semantic"), id="mode"),
        pytest.param(
            "caption:nDCG@10@tst=0.5<-0.02",
            Gate("nDCG@10", "<", -0.02, mode="caption", setting="tst=0.5"),
            id="mode-and-setting",
        ),
        pytest.param("RR@default>0", Gate("RR", ">", 0.0, setting="default"), id="setting"),
    ],
)
def test_parse_gate(text: str, gate: Gate) -> None:
    assert parse_gate(text) == gate


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("ndcg@10", "cannot parse gate", id="no-op"),
        pytest.param("ndcg@10 < lots", "cannot parse gate", id="no-number"),
        pytest.param("nDCG@10 =< -0.02", "cannot parse gate", id="bad-op"),
        pytest.param("bleu@4<-0.1", "unknown measure", id="unknown-measure"),
        pytest.param("success<-0.1", "needs a cut-off", id="missing-cutoff"),
    ],
)
def test_parse_gate_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_gate(text)


def test_check_gates() -> None:
    cmp = compare_runs(evaluation(by_query(A)), evaluation(by_query(B)))
    delta = sum(B) / len(B) - sum(A) / len(A)  # -0.11
    failures = check_gates(cmp, ["nDCG@10<-0.1", "ndcg@10<-0.5", "semantic:nDCG@10>=-1"])
    assert [str(f.gate) for f in failures] == ["nDCG@10<-0.1", "semantic:nDCG@10>=-1"]
    assert failures[0].delta == pytest.approx(delta)
    with pytest.raises(UsageError, match="matches nothing"):
        check_gates(cmp, ["P@5<-0.1"])
    with pytest.raises(UsageError, match="matches nothing"):
        check_gates(cmp, ["fts:nDCG@10<-0.1"])


def test_measures_filter_and_runs_with_nothing_in_common() -> None:
    ev_a = evaluation(by_query(A), extra=[("P@10", by_query(A))])
    ev_b = evaluation(by_query(B), extra=[("P@10", by_query(B))])
    only = compare_runs(ev_a, ev_b, measures=["ndcg@10"])  # any spelling parse_measure takes
    assert only.measures["measure"].to_list() == ["nDCG@10"]
    disjoint = compare_runs(ev_a, evaluation(by_query(B), mode="fts"))
    assert disjoint.measures.height == 0 and disjoint.per_query.height == 0
    with pytest.raises(UsageError, match="no measure was compared"):
        check_gates(disjoint, ["nDCG@10<-0.1"])


def test_float_noise_is_no_difference() -> None:
    # The same nDCG summed in another order differs in the last bit: 0.1 + 0.2 != 0.3.
    noisy = [0.1 + 0.2, 0.7, 0.2 + 0.4, 0.9]
    exact = [0.3, 0.7, 0.6, 0.9]
    row = compare_runs(evaluation(by_query(noisy)), evaluation(by_query(exact))).measures.row(
        0, named=True
    )
    assert (row["delta"], row["t"], row["p_t"], row["effect_size"]) == (0.0, 0.0, 1.0, 0.0)
    assert row["p_randomisation"] == 1.0


def test_identical_runs_show_nothing() -> None:
    cmp = compare_runs(evaluation(by_query(A)), evaluation(by_query(A)))
    row = cmp.measures.row(0, named=True)
    assert row["delta"] == 0.0
    assert row["p_randomisation"] == 1.0
    assert not row["significant"]
    assert check_gates(cmp, ["nDCG@10<-0.0001"]) == []
    assert cmp.regressions.height == 0


# --- synthetic runs through evaluate_run and the CLI ------------------------------------------

N_QUERIES = 12


def _runs(tmp_path: Path) -> tuple[Path, Path]:
    """Run A finds each query's relevant media first; run B ranks it fourth, after misses."""
    hits_a, hits_b, judgments = [], [], []
    for i in range(N_QUERIES):
        q, good = f"q{i:02d}", f"good-{i}"
        judgments.append(judgment(q, good, 1))
        misses = [f"miss-{i}-{j}" for j in range(3)]
        for rank, media in enumerate([good, *misses]):
            hits_a.append(hit(q, media, raw_score=0.2 + 0.05 * rank, caption=f"caption {media}"))
        for rank, media in enumerate([*misses, good]):
            hits_b.append(hit(q, media, raw_score=0.3 + 0.05 * rank, caption=f"caption {media}"))
    run_a = build_run(tmp_path / "a", hits=hits_a, judgments=judgments, run_id="run-a")
    run_b = build_run(tmp_path / "b", hits=hits_b, judgments=judgments, run_id="run-b")
    return run_a, run_b


def _compare_dirs(run_a: Path, run_b: Path) -> Comparison:
    from runner.evaluate.compare import compare_run_dirs

    return compare_run_dirs(run_a, run_b)[2]


def test_clearly_worse_run_is_significant(tmp_path: Path) -> None:
    run_a, run_b = _runs(tmp_path)
    cmp = _compare_dirs(run_a, run_b)
    rr = cmp.measures.filter((pl.col("measure") == "RR") & (pl.col("unit") == "media")).row(
        0, named=True
    )
    assert rr["n_pairs"] == N_QUERIES
    assert rr["delta"] == pytest.approx(1 / 4 - 1)  # relevant at rank 1 -> rank 4
    # Every query dropped: the exact test gives 2 / 2^n before Holm's factor.
    assert rr["p_randomisation"] == pytest.approx(2 / 2**N_QUERIES)
    assert rr["significant"]
    assert check_gates(cmp, ["rr<-0.1"])
    assert cmp.displacement.height > 0 and cmp.drift.height > 0


def test_identical_dirs_are_not_significant(tmp_path: Path) -> None:
    run_a, _ = _runs(tmp_path)
    cmp = _compare_dirs(run_a, run_a)
    assert not cmp.measures["significant"].any()
    assert cmp.measures["delta"].drop_nans().abs().max() == 0.0
    assert cmp.displacement["rbo"].drop_nulls().min() == pytest.approx(1.0)


runner = CliRunner()


def test_cli_gate_exit_codes(tmp_path: Path) -> None:
    run_a, run_b = _runs(tmp_path)
    out = tmp_path / "cmp"
    tripped = runner.invoke(
        app, ["compare", str(run_a), str(run_b), "--fail-on", "rr<-0.1", "--out", str(out)]
    )
    assert tripped.exit_code == 1, tripped.output
    assert "rr" in tripped.output.lower() and "FAIL" in tripped.output
    assert (out / "report.html").is_file()
    passed = runner.invoke(
        app, ["compare", str(run_a), str(run_a), "--fail-on", "RR<-0.1", "--out", str(out)]
    )
    assert passed.exit_code == 0, passed.output
    bad_gate = runner.invoke(app, ["compare", str(run_a), str(run_b), "--fail-on", "rr<<1"])
    assert bad_gate.exit_code == 2
    assert "cannot parse gate" in bad_gate.output
    missing = runner.invoke(app, ["compare", str(run_a), str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "error:" in missing.output
    unknown = runner.invoke(app, ["compare", str(run_a), str(run_b), "--fail-on", "P@5<-0.1"])
    assert unknown.exit_code == 2
    assert "matches nothing" in unknown.output
