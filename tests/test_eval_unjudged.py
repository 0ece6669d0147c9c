"""Unjudged hits: counts per query, and the judge-todo file read back as qrels."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from run_builder import build_run, hit, judgment, request

from runner.errors import RunError
from runner.evaluate import evaluate_run, load_qrels, write_judge_todo


def run_with_gaps(tmp_path: Path) -> Path:
    hits = [hit("q1", m, caption=f"caption of {m}\nsecond line") for m in ("m1", "m2", "m3", "m4")]
    hits += [hit("q1", m, mode="fts", score_type="bm25") for m in ("m4", "m5")]
    hits += [hit("q2", "m9")]
    requests = [
        request("q1", query_text="a dog on a beach"),
        request("q2", query_text="red bicycle"),
    ]
    return build_run(
        tmp_path,
        hits=hits,
        judgments=[judgment("q1", "m2"), judgment("q1", "m4", 0)],
        requests=requests,
    )


def test_unjudged_counts_per_query_mode_setting(tmp_path: Path) -> None:
    ev = evaluate_run(run_with_gaps(tmp_path), judge_k=3)
    counts = {
        (r["query_id"], r["mode"]): (r["n_hits"], r["n_unjudged"])
        for r in ev.unjudged.iter_rows(named=True)
    }
    assert counts == {
        ("q1", "semantic"): (3, 2),  # top 3: m1 m2 m3; m2 judged
        ("q1", "fts"): (2, 1),  # m4 judged (grade 0), m5 not
        ("q2", "semantic"): (1, 1),
    }
    assert set(ev.unjudged["k"]) == {3}


def test_judge_todo_round_trip(tmp_path: Path) -> None:
    run_dir = run_with_gaps(tmp_path)
    todo = tmp_path / "todo.qrels"
    assert write_judge_todo(run_dir, todo, k=10) == 4  # q1: m1 m3 m5; q2: m9
    text = todo.read_text(encoding="utf-8")
    assert "# query q1: a dog on a beach" in text
    assert "# m1.jpg | caption of m1 second line\nq1 0 m1 -1\n" in text
    assert load_qrels(todo).height == 0  # nothing labelled yet: every line is at -1

    labelled = text.replace("q1 0 m1 -1", "q1 0 m1 2").replace("q2 0 m9 -1", "q2 0 m9 0")
    todo.write_text(labelled, encoding="utf-8")
    ev = evaluate_run(run_dir, extra_judgments=[todo], judge_k=10)
    assert ev.queries.filter(pl.col("query_id") == "q2")["judged"].to_list() == [True]
    left = write_judge_todo(run_dir, tmp_path / "left.qrels", k=10, extra_judgments=[todo])
    assert left == 2  # m3 and m5 still to do
    semantic_q1 = ev.per_query.filter(
        (pl.col("query_id") == "q1") & (pl.col("mode") == "semantic") & (pl.col("unit") == "media")
    )
    rr = semantic_q1.filter(pl.col("measure") == "RR")["value"].item()
    assert rr == pytest.approx(1 / 1)  # m1, now graded 2, is first


def test_judge_todo_refuses_ids_that_are_not_trec_safe(tmp_path: Path) -> None:
    run_dir = build_run(tmp_path, hits=[hit("q 1", "m1")])
    with pytest.raises(RunError, match="white space"):
        write_judge_todo(run_dir, tmp_path / "todo.qrels")
