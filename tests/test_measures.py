"""Measures: hand-computable cases, and equality with trec_eval (pytrec_eval) to 1e-9."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl
import pytest
import pytrec_eval
from run_builder import build_run, hit, judgment, request

from runner.errors import UsageError
from runner.evaluate import compute_measures, evaluate_run, parse_measure, parse_measures

Qrels = dict[str, dict[str, int]]
Rankings = dict[str, list[str]]

# Our spelling -> trec_eval's measure (as pytrec_eval names its result keys).
TREC_NAMES = {
    "P@5": "P_5",
    "P@10": "P_10",
    "P": "set_P",
    "R@20": "recall_20",
    "R@100": "recall_100",
    "R": "set_recall",
    "nDCG@10": "ndcg_cut_10",
    "nDCG@20": "ndcg_cut_20",
    "nDCG": "ndcg",
    "AP": "map",
    "AP@10": "map_cut_10",
    "RR": "recip_rank",
    "Success@1": "success_1",
    "Success@10": "success_10",
    "NumRet": "num_ret",
}


def _trec_measure(key: str) -> str:
    """pytrec_eval's request spelling of a result key: "P_10" -> "P.10"."""
    match = re.match(r"^(.*)_(\d+)$", key)
    return f"{match.group(1)}.{match.group(2)}" if match else key


def frames(
    rankings: Mapping[str, Sequence[str]], qrels: Qrels
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One system's rankings and judgments as the frames `compute_measures` takes."""
    ranked = pl.DataFrame(
        [
            ("m", "s", q, "", doc, i + 1)
            for q, docs in rankings.items()
            for i, doc in enumerate(docs)
        ],
        schema=["mode", "setting", "query_id", "pool", "doc", "rank"],
        orient="row",
    )
    judged = pl.DataFrame(
        [(q, "", doc, grade) for q, docs in qrels.items() for doc, grade in docs.items()],
        schema=["query_id", "pool", "doc", "grade"],
        orient="row",
    )
    return ranked, judged


def ours(
    rankings: Mapping[str, Sequence[str]], qrels: Qrels, measures: Sequence[str]
) -> dict[tuple[str, str], float]:
    ranked, judged = frames(rankings, qrels)
    values = compute_measures(ranked, judged, measures)
    return {(r["query_id"], r["measure"]): r["value"] for r in values.iter_rows(named=True)}


def trec_eval(
    rankings: Mapping[str, Sequence[str]], qrels: Qrels, measures: Sequence[str]
) -> dict[tuple[str, str], float]:
    """trec_eval's values; scores fall with our rank so that its order (score desc) is ours."""
    run = {
        q: {doc: float(len(docs) - i) for i, doc in enumerate(docs)} for q, docs in rankings.items()
    }
    wanted = {_trec_measure(TREC_NAMES[m]) for m in measures}
    result = pytrec_eval.RelevanceEvaluator(qrels, wanted).evaluate(run)
    return {(q, m): result[q][TREC_NAMES[m]] for q in result for m in measures}


def one(docs: Sequence[str], qrels: Mapping[str, int], measure: str) -> float:
    value = ours({"q": docs}, {"q": dict(qrels)}, [measure])[("q", measure)]
    assert value is not None
    return value


# ---- hand-computable cases --------------------------------------------------------------


def test_precision_divides_by_k_even_when_fewer_are_returned() -> None:
    assert one(["a", "x", "b"], {"a": 1, "b": 2}, "P@10") == pytest.approx(2 / 10)
    assert one(["a", "x", "b"], {"a": 1, "b": 2}, "P@2") == pytest.approx(1 / 2)
    assert one(["a", "x", "b"], {"a": 1, "b": 2}, "P") == pytest.approx(2 / 3)  # set precision


def test_grade_zero_is_not_relevant() -> None:
    assert one(["a", "b"], {"a": 0, "b": 1}, "P@2") == pytest.approx(1 / 2)
    assert one(["a", "b"], {"a": 0, "b": 1}, "RR") == pytest.approx(
        1 / 2
    )  # first relevant at rank 2


def test_recall_counts_relevant_documents_never_returned() -> None:
    qrels = {"a": 1, "b": 1, "c": 2, "d": 0}
    assert one(["a", "x", "c"], qrels, "R@100") == pytest.approx(2 / 3)  # 3 relevant, 2 returned
    assert one(["a", "x", "c"], qrels, "R@2") == pytest.approx(1 / 3)


def test_average_precision_divides_by_all_relevant() -> None:
    qrels = {"a": 1, "b": 1, "c": 1}
    ap = one(["a", "x", "b", "y"], qrels, "AP")
    assert ap == pytest.approx((1 / 1 + 2 / 3) / 3)  # relevant at ranks 1 and 3, 3 relevant
    assert one(["a", "x", "b"], qrels, "AP@2") == pytest.approx((1 / 1) / 3)  # rank 3 is cut off


def test_reciprocal_rank_and_success() -> None:
    assert one(["x", "y", "a"], {"a": 1}, "RR") == pytest.approx(1 / 3)  # first relevant at rank 3
    assert one(["x", "y"], {"a": 1}, "RR") == 0.0
    assert one(["x", "y", "a"], {"a": 1}, "Success@2") == 0.0
    assert one(["x", "y", "a"], {"a": 1}, "Success@3") == 1.0
    assert one(["x", "y", "a"], {"a": 1}, "RR@2") == 0.0


def test_ndcg_uses_the_ideal_ranking_of_the_judgments() -> None:
    # Only "b" (grade 1) is returned; the judgments also hold "a" (grade 2), never returned.
    ndcg = one(["b"], {"a": 2, "b": 1}, "nDCG@10")
    dcg = 1 / math.log2(2)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg == pytest.approx(dcg / ideal)  # not 1.0, which the returned list's ideal would give


def test_ndcg_graded_gain_and_log_discount() -> None:
    ndcg = one(["x", "b", "a"], {"a": 2, "b": 1}, "nDCG@3")
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg == pytest.approx(dcg / ideal)
    assert one(["x"], {"a": 0}, "nDCG@3") == 0.0  # nothing relevant: the ideal DCG is 0


def test_judged_at_k_and_numret() -> None:
    assert one(["a", "x", "b", "y"], {"a": 0, "b": 1}, "Judged@4") == pytest.approx(2 / 4)
    assert one(["a", "x"], {"a": 0}, "Judged@10") == pytest.approx(1 / 10)
    assert one(["a", "x", "y"], {"a": 0}, "NumRet") == 3.0


def test_query_without_judgments_is_flagged_and_numret_still_computed() -> None:
    ranked, judged = frames({"q1": ["a"], "q2": ["a", "b"]}, {"q1": {"a": 1}})
    values = compute_measures(ranked, judged, ["P@10", "NumRet", "Judged@10"])
    q2 = {r["measure"]: r for r in values.filter(pl.col("query_id") == "q2").iter_rows(named=True)}
    assert not q2["P@10"]["judged"]
    assert q2["P@10"]["value"] is None
    assert q2["NumRet"]["value"] == 2.0
    assert q2["Judged@10"]["value"] == 0.0


def test_a_ranking_that_returned_nothing_scores_zero() -> None:
    ranked, judged = frames({"q1": ["a"]}, {"q1": {"a": 1}, "q2": {"b": 2}})
    cells = pl.DataFrame(
        {"mode": ["m", "m"], "setting": ["s", "s"], "query_id": ["q1", "q2"], "pool": ["", ""]}
    )
    values = compute_measures(
        ranked, judged, ["P@10", "nDCG@10", "AP", "RR", "NumRet"], cells=cells
    )
    q2 = values.filter(pl.col("query_id") == "q2")
    assert q2["judged"].all()
    assert q2["value"].to_list() == [0.0] * 5


# ---- measure names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, canonical",
    [
        pytest.param("nDCG@10", "nDCG@10", id="ndcg"),
        pytest.param("ndcg@10", "nDCG@10", id="lower-case"),
        pytest.param("P@5", "P@5", id="p"),
        pytest.param("R@100", "R@100", id="r"),
        pytest.param("MAP", "AP", id="map-alias"),
        pytest.param("MRR", "RR", id="mrr-alias"),
        pytest.param("RR@10", "RR@10", id="rr-cut"),
        pytest.param("success@1", "Success@1", id="success"),
        pytest.param("NumRet", "NumRet", id="numret"),
        pytest.param("Judged@10", "Judged@10", id="judged"),
        pytest.param(" AP @ 100 ", "AP@100", id="spaces"),
    ],
)
def test_parse_measure_round_trips(text: str, canonical: str) -> None:
    measure = parse_measure(text)
    assert str(measure) == canonical
    assert parse_measure(str(measure)) == measure


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("F1@10", "unknown measure", id="unknown"),
        pytest.param("Success", "needs a cut-off", id="success-without-k"),
        pytest.param("Judged", "needs a cut-off", id="judged-without-k"),
        pytest.param("NumRet@10", "takes no cut-off", id="numret-with-k"),
        pytest.param("P@0", "at least 1", id="zero-k"),
        pytest.param("nDCG@ten", "unknown measure", id="word-k"),
    ],
)
def test_parse_measure_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_measure(text)


def test_parse_measures_keeps_order_and_drops_repeats() -> None:
    assert [str(m) for m in parse_measures(["AP", "map", "P@10", "ndcg@10"])] == [
        "AP",
        "P@10",
        "nDCG@10",
    ]


# ---- equality with trec_eval ------------------------------------------------------------

ALL = list(TREC_NAMES)


def random_case(seed: int, n_queries: int) -> tuple[Rankings, Qrels]:
    """Seeded rankings of 0..150 docs (some shorter than every cut-off) and graded judgments."""
    rng = random.Random(seed)
    rankings: Rankings = {}
    qrels: Qrels = {}
    for q in range(n_queries):
        docs = [f"d{i:04d}" for i in range(400)]
        qid = f"q{q:04d}"
        length = rng.choice([1, 3, 7, 12, 40, 99, 150])
        rankings[qid] = rng.sample(docs, length)
        pool = rankings[qid][: rng.randint(0, length)] + rng.sample(docs, rng.randint(1, 40))
        grades = [0, 0, 1, 1, 2, 3] if q % 10 else [0]  # every tenth query: nothing relevant
        qrels[qid] = {doc: rng.choice(grades) for doc in pool}
    return rankings, qrels


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_equal_to_trec_eval_on_generated_runs(seed: int) -> None:
    rankings, qrels = random_case(seed, 300)
    mine, theirs = ours(rankings, qrels, ALL), trec_eval(rankings, qrels, ALL)
    assert theirs.keys() == mine.keys()
    for key, expected in theirs.items():
        assert mine[key] == pytest.approx(expected, abs=1e-9, rel=0), key


def test_trec_eval_skips_queries_absent_from_the_run_we_do_not() -> None:
    rankings, qrels = {"q1": ["a"]}, {"q1": {"a": 1}, "q2": {"b": 1}}
    assert {q for q, _ in trec_eval(rankings, qrels, ["AP"])} == {"q1"}
    ranked, judged = frames(rankings, qrels)
    cells = pl.DataFrame(
        {"mode": ["m"] * 2, "setting": ["s"] * 2, "query_id": ["q1", "q2"], "pool": [""] * 2}
    )
    values = compute_measures(ranked, judged, ["AP"], cells=cells)
    assert values["value"].to_list() == [1.0, 0.0]
    assert values["value"].mean() == pytest.approx((1.0 + 0.0) / 2)  # the empty answer is penalised


def _coco() -> list[dict[str, object]]:
    path = Path(__file__).parents[1] / "runner" / "server" / "data" / "coco-val2017-captions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


_STOP = frozenset(
    "a an the of on in with and is are to at its it his her their by for from two one".split()
)


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP)


def coco_case(n_queries: int) -> tuple[Rankings, Qrels]:
    """Queries: one caption of an image; ranking: word overlap with each image's captions.

    Judgments: the image the caption came from (grade 2), images whose captions share at least
    three of the query's content words (grade 1), and the next-best 20 images (grade 0).
    """
    images = _coco()
    bags = [_words(" ".join(str(c) for c in img["captions"])) for img in images]  # type: ignore[attr-defined]
    rankings: Rankings = {}
    qrels: Qrels = {}
    for index in range(0, len(images), len(images) // n_queries)[:n_queries]:
        source = images[index]
        query = _words(str(source["captions"][1]))  # type: ignore[index]
        scored = sorted(
            (
                (len(query & bag), str(img["image_id"]))
                for img, bag in zip(images, bags, strict=True)
            ),
            key=lambda pair: (-pair[0], pair[1]),
        )
        qid = f"coco-{source['image_id']}"
        rankings[qid] = [doc for score, doc in scored[:100] if score > 0]
        judged = {doc: 1 if score >= 3 else 0 for score, doc in scored[:120]}
        judged[str(source["image_id"])] = 2
        qrels[qid] = judged
    return rankings, qrels


def test_equal_to_trec_eval_on_a_coco_captions_run() -> None:
    rankings, qrels = coco_case(60)
    mine, theirs = ours(rankings, qrels, ALL), trec_eval(rankings, qrels, ALL)
    assert len(theirs) == 60 * len(ALL)
    for key, expected in theirs.items():
        assert mine[key] == pytest.approx(expected, abs=1e-9, rel=0), key


def test_equal_to_trec_eval_at_the_cluster_level(tmp_path: Path) -> None:
    """evaluate_run's cluster measures equal trec_eval's on clusters built by the stated rule."""
    rng = random.Random(7)
    cluster_of = {f"m{i:03d}": f"c{i // 4:03d}" for i in range(200)}  # clusters of 4 media
    hits, judgments = [], []
    for q in range(40):
        qid = f"q{q:02d}"
        chosen = rng.sample(sorted(cluster_of), rng.randint(1, 30))
        clusters = list(dict.fromkeys(cluster_of[m] for m in chosen))  # cluster order: first member
        for m in chosen:
            hits.append(
                hit(
                    qid, m, cluster_id=cluster_of[m], cluster_rank=clusters.index(cluster_of[m]) + 1
                )
            )
        for m in rng.sample(sorted(cluster_of), 25):
            judgments.append(judgment(qid, m, rng.choice([0, 1, 2])))
    run_dir = build_run(tmp_path, hits=hits, judgments=judgments, requests=[request("q99")])
    ev = evaluate_run(run_dir, measures=ALL)

    # Independently: a cluster's grade is the max over judged members whose cluster the run saw.
    seen = {m for h in hits for m in [str(h["media_id"])]}
    qrels: Qrels = {}
    for j in judgments:
        if j["value"] in seen:
            doc = cluster_of[str(j["value"])]
            grades = qrels.setdefault(str(j["query_id"]), {})
            grades[doc] = max(grades.get(doc, 0), int(j["grade"]))
    rankings: Rankings = {}
    for h in sorted(hits, key=lambda h: (str(h["query_id"]), int(h["cluster_rank"]))):
        ranking = rankings.setdefault(str(h["query_id"]), [])
        if str(h["cluster_id"]) not in ranking:
            ranking.append(str(h["cluster_id"]))
    theirs = trec_eval(rankings, qrels, ALL)
    scored = ev.per_query.filter(
        (pl.col("unit") == "cluster") & pl.col("query_id").is_in(list(rankings))
    )
    mine = {(r["query_id"], r["measure"]): r["value"] for r in scored.iter_rows(named=True)}
    assert mine.keys() == theirs.keys()
    for key, expected in theirs.items():
        assert mine[key] == pytest.approx(expected, abs=1e-9, rel=0), key


def test_item_hash_collisions_never_give_a_wrong_grade(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every item hashing alike: the matches are confirmed on the strings, values unchanged."""
    import runner.evaluate.measures as measures_module

    rankings, qrels = random_case(11, 40)
    expected = ours(rankings, qrels, ALL)
    monkeypatch.setattr(measures_module, "_hash", lambda columns, seed: pl.lit(7, dtype=pl.UInt64))
    colliding = ours(rankings, qrels, ALL)
    assert colliding.keys() == expected.keys()
    for key, value in expected.items():
        assert colliding[key] == pytest.approx(value, abs=1e-12), key
