"""The judgments store: append-only log, undo, consensus, compaction, read by the evaluation."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import polars as pl
import pytest
from run_builder import build_run, hit, judgment

from runner.errors import RunError, UsageError
from runner.evaluate.run import evaluate_run
from runner.evaluate.unjudged import write_judge_todo
from runner.judge.labels import (
    LOG_FILE,
    Label,
    append_label,
    check_grade,
    check_rater,
    compact,
    consensus,
    read_log,
    standing_labels,
    store_dir,
    store_judgments,
)
from runner.judge.session import open_session
from runner.report import report_run


def _run(tmp_path: Path) -> Path:
    hits = [hit("q1", f"m{i}") for i in range(1, 6)]
    hits += [hit("q1", "m3", mode="fts"), hit("q1", "m9", mode="fts")]
    hits += [hit("q2", f"n{i}") for i in range(1, 4)]
    return build_run(tmp_path, hits=hits, judgments=[judgment("q1", "m1", 2)])


def _label(rater: str, media: str, grade: int | None, op: str = "grade") -> Label:
    return Label(rater=rater, query_id="q1", media_id=media, grade=grade, op=op)


def test_the_store_lies_beside_the_suite(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert store_dir(run) == tmp_path / "suite=test" / "_judgments"
    loose = tmp_path / "copy"
    loose.mkdir()
    assert store_dir(loose) == loose / "_judgments"


def test_undo_pops_the_latest_grade_and_a_regrade_is_undone_to_the_old_one(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for label in [
        _label("ana", "m1", 1),
        _label("ana", "m2", 3),
        _label("bo", "m1", 0),
        _label("ana", "m1", 2),  # re-grade
        _label("ana", "", None, op="undo"),  # takes back the re-grade: m1 is 1 again
        _label("ana", "", None, op="undo"),  # takes back m2
    ]:
        append_label(store, label)
    standing = standing_labels(read_log(store))
    assert standing.rows() == [("ana", "q1", "m1", 1), ("bo", "q1", "m1", 0)]


def test_each_label_is_synced_before_grade_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(tmp_path)
    session = open_session(run, rater="ana", k=5)
    log = store_dir(run) / LOG_FILE
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(log.read_bytes().count(b"\n"))  # lines written when the sync is asked
        real_fsync(fd)

    monkeypatch.setattr("runner.judge.labels.os.fsync", fsync)
    session.grade("q1", "m2", 1)
    assert synced == [1]
    session.grade("q1", "m3", 0)
    session.undo()
    assert synced == [1, 2, 3]


def test_raters_appending_at_once_never_interleave(tmp_path: Path) -> None:
    store = tmp_path / "store"

    def give(rater: str) -> None:
        for i in range(300):
            append_label(store, Label(rater, "q1", f"m{i}", i % 4, ranks={"fts": i + 1}))

    threads = [threading.Thread(target=give, args=(name,)) for name in ("ana", "bo", "cy")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log = read_log(store)  # every line whole: a torn one in the middle would raise
    assert log.height == 900
    assert sorted(log.group_by("rater").len().rows()) == [("ana", 300), ("bo", 300), ("cy", 300)]


def test_a_torn_last_line_is_ignored_and_a_torn_middle_line_is_an_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    append_label(store, _label("ana", "m1", 1))
    with open(store / LOG_FILE, "ab") as f:
        f.write(b'{"time": "2024-01-01T00:00:00+00:00", "rater": "ana", "op": "gr')  # a crash
    assert read_log(store).height == 1
    with open(store / LOG_FILE, "ab") as f:
        f.write(b"\n")
    append_label(store, _label("ana", "m2", 2))
    with pytest.raises(RunError, match=r"labels.jsonl:2: not a JSON object"):
        read_log(store)


def test_consensus_is_the_lower_median(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for rater, grade in [("a", 3), ("b", 0), ("c", 2), ("d", 1)]:
        append_label(store, _label(rater, "m1", grade))
    for rater, grade in [("a", 3), ("b", 2), ("c", 2)]:
        append_label(store, _label(rater, "m2", grade))
    grades = dict(consensus(standing_labels(read_log(store))).select("media_id", "grade").rows())
    assert grades == {"m1": 1, "m2": 2}  # sorted 0 1 2 3 -> lower median 1; 2 2 3 -> 2


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../etc", id="parent"),
        pytest.param("a/b", id="slash"),
        pytest.param("/tmp/x", id="absolute"),
        pytest.param("", id="empty"),
        pytest.param(".hidden", id="dot"),
        pytest.param("ana smith", id="space"),
        pytest.param("a\\b", id="backslash"),
    ],
)
def test_a_rater_name_that_is_not_a_file_name_is_refused(name: str) -> None:
    with pytest.raises(UsageError, match=r"^--rater: "):
        check_rater(name)


@pytest.mark.parametrize("grade", [4, -1, "2", True, 2.0, None])
def test_a_grade_off_the_scale_is_refused(grade: object) -> None:
    with pytest.raises(UsageError, match=r"^grade: .* one of 0 \(not relevant\)"):
        check_grade(grade)


def test_compact_writes_parquet_and_qrels_equal_to_the_log(tmp_path: Path) -> None:
    store = tmp_path / "store"
    append_label(store, Label("ana", "q1", "m1", 2, ranks={"fts": 3, "semantic": 1}, best_rank=1))
    append_label(store, _label("ana", "m2", 0))
    append_label(store, _label("bo", "m1", 3))
    compact(store)
    log = pl.read_parquet(store / "labels.parquet")
    assert log.height == 3 and {"rater", "time", "best_rank", "ranks"} <= set(log.columns)
    assert log["ranks"][0].to_list() == [
        {"mode": "fts", "rank": 3},
        {"mode": "semantic", "rank": 1},
    ]
    assert (store / "qrels" / "ana.qrels").read_text() == "q1 0 m1 2\nq1 0 m2 0\n"
    assert (store / "qrels" / "bo.qrels").read_text() == "q1 0 m1 3\n"
    assert (store / "judgments.qrels").read_text() == "q1 0 m1 2\nq1 0 m2 0\n"


def test_the_evaluation_counts_the_stores_labels(tmp_path: Path) -> None:
    run = _run(tmp_path)
    before = evaluate_run(run)
    session = open_session(run, rater="ana", k=5)
    session.grade("q1", "m2", 3)
    session.grade("q2", "n1", 1)  # q2 becomes judged
    # No close(): labels count as soon as they are in the log, even after a crash.
    after = evaluate_run(run)
    qrels = tmp_path / "same.qrels"
    qrels.write_text("q1 0 m2 3\nq2 0 n1 1\n")
    equal = evaluate_run(run, extra_judgments=[qrels], judgments_store=False)
    assert after.per_query.equals(equal.per_query)
    assert not after.per_query.equals(before.per_query)

    def judged(ev: object, query: str) -> float:
        per_query: pl.DataFrame = ev.per_query  # type: ignore[attr-defined]
        row = per_query.filter(
            (pl.col("query_id") == query)
            & (pl.col("measure") == "Judged@10")
            & (pl.col("mode") == "semantic")
            & (pl.col("unit") == "media")
        )
        return float(row["value"][0])

    # Judged@10 divides by 10, as trec_eval does: m1 (suite) and m2 (store); n1 (store).
    assert judged(before, "q1") == pytest.approx(1 / 10)
    assert judged(after, "q1") == pytest.approx(2 / 10)
    assert judged(after, "q2") == pytest.approx(1 / 10)
    assert set(after.queries.filter(pl.col("judged"))["query_id"]) == {"q1", "q2"}
    todo = tmp_path / "todo.qrels"
    assert write_judge_todo(run, todo, k=5) == 6  # 8 media in the top 5 less the 2 graded


def test_the_report_shows_agreement_and_each_rater_alone(tmp_path: Path) -> None:
    run = _run(tmp_path)
    ana = open_session(run, rater="ana", k=5)
    for i, item in enumerate(ana.items):
        ana.grade(item.query_id, item.media_id, i % 4)
    bo = open_session(run, rater="bo", k=5, overlap=True)
    assert {(i.query_id, i.media_id) for i in bo.items} == {
        (i.query_id, i.media_id) for i in ana.items
    }
    for i, item in enumerate(bo.items):
        bo.grade(item.query_id, item.media_id, (i % 4) if i % 2 else 3)
    paths = report_run(run)
    summary = json.loads(paths.summary.read_text())["extras"]["raters"]
    assert summary["raters"] == ["ana", "bo"]
    from runner.judge.agreement import agreement

    expected = agreement(standing_labels(read_log(store_dir(run))))
    assert summary["kappa"] == pytest.approx(expected.kappa)
    assert summary["alpha_ordinal"] == pytest.approx(expected.alpha)
    alone = {(r["rater"], r["mode"], r["measure"]): r for r in summary["alone"]}
    ana_only = evaluate_run(
        run, extra_judgments=[_qrels(tmp_path, run, "ana")], judgments_store=False
    )
    mean = ana_only.summary.filter(
        (pl.col("mode") == "fts") & (pl.col("measure") == "nDCG@10") & (pl.col("unit") == "media")
    )["value"][0]
    assert alone[("ana", "fts", "nDCG@10")]["alone"] == pytest.approx(mean)
    html = paths.html.read_text()
    assert 'id="raters"' in html and "Krippendorff" in html and 'href="#raters"' in html
    section = html[html.index('<section id="raters">') :]
    assert '<svg class="plot" role="img" aria-label="Grades given to the same media' in section
    assert "## Raters and agreement" in paths.markdown.read_text()
    assert "each pair of raters" not in section  # two raters: the one κ above says it

    cy = open_session(run, rater="cy", k=5, overlap=True)  # a third rater: κ of every pair
    for item in cy.items:
        cy.grade(item.query_id, item.media_id, 3)
    paths = report_run(run)
    summary = json.loads(paths.summary.read_text())["extras"]["raters"]
    expected = agreement(standing_labels(read_log(store_dir(run))))
    pairs = {tuple(p["raters"]): p for p in summary["pairs"]}
    assert set(pairs) == {("ana", "bo"), ("ana", "cy"), ("bo", "cy")}
    for pair in expected.pairs:
        assert pairs[pair.rater_a, pair.rater_b]["n_items"] == pair.n_items == len(cy.items)
        assert pairs[pair.rater_a, pair.rater_b]["kappa"] == pytest.approx(pair.kappa)
    assert summary["kappa"] is None
    section = paths.html.read_text().split('<section id="raters">')[1]
    assert "κ of each pair of raters" in section


def _qrels(tmp_path: Path, run: Path, rater: str) -> Path:
    grades = store_judgments(run, rater=rater)
    path = tmp_path / f"{rater}.qrels"
    lines = [f"{q} 0 {v} {g}" for q, v, g in grades.select("query_id", "value", "grade").rows()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_report_without_labels_has_no_raters_section(tmp_path: Path) -> None:
    paths = report_run(_run(tmp_path))
    assert "extras" not in json.loads(paths.summary.read_text())
    assert 'id="raters"' not in paths.html.read_text()
