"""Judgments: TREC qrels and their errors, resolving file names, label pooling, merging."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from run_builder import build_run, hit, judgment

from runner.errors import RunError, SuiteError
from runner.evaluate import evaluate_run, load_qrels, load_run_judgments, parse_qrels
from runner.suite import load_suite
from runner.suite.files import read_qrels


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "judged.qrels"
    path.write_text(text, encoding="utf-8")
    return path


def grades(qrels: pl.DataFrame) -> dict[tuple[str, str], int]:
    return {(q, m): g for q, m, g in qrels.iter_rows()}


def test_parse_qrels_skips_comments_blank_and_unjudged_lines() -> None:
    lines = [
        "# header",
        "",
        "q1 0 m1 2",
        "q1\t0\tm2\t0",
        "q1 0 m3 -1  # not judged yet",
        "q2 Q0 000000000632.jpg 1  # file name | caption with # inside",
    ]
    frame = parse_qrels(lines, path="x.qrels")
    assert frame.select("query_id", "kind", "value", "grade").rows() == [
        ("q1", "doc", "m1", 2),
        ("q1", "doc", "m2", 0),
        ("q2", "doc", "000000000632.jpg", 1),
    ]
    assert set(frame["source"]) == {"x.qrels"}


@pytest.mark.parametrize(
    "text, line, message",
    [
        pytest.param(
            "q1 0 m1 1\nq1 0 m2\n",
            2,
            "expected 4 fields (query_id 0 doc grade), found 3",
            id="three-fields",
        ),
        pytest.param(
            "# c\n\nq1 0 m1 high\n", 3, "grade: 'high' is not a whole number", id="word-grade"
        ),
        pytest.param("q1 0 m1 1.5\n", 1, "grade: '1.5' is not a whole number", id="float-grade"),
        pytest.param(
            "q1 0 m1 1 extra\n",
            1,
            "expected 4 fields (query_id 0 doc grade), found 5",
            id="trailing-field",
        ),
    ],
)
def test_malformed_qrels_name_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(
        SuiteError, match=rf"^{re.escape(str(path))}:{line}: {re.escape(message)}"
    ) as info:
        load_qrels(path)
    assert (info.value.path, info.value.line) == (str(path), line)


def test_missing_qrels_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="cannot read qrels"):
        load_qrels(tmp_path / "absent.qrels")


def test_docs_resolve_to_media_ids_through_file_names(tmp_path: Path) -> None:
    hits = [hit("q1", "m1", file_name="a.jpg"), hit("q1", "m2", file_name="b.jpg")]
    judgments = [
        judgment("q1", "b.jpg", 2, kind="file_name"),
        judgment("q1", "gone.jpg", 1, kind="file_name"),  # never returned: kept, counts in recall
        judgment("q2", "m1", 1, kind="media_id"),
    ]
    qrels_file = write(tmp_path, "q1 0 a.jpg 1\nq1 0 m2 1\nq1 0 m7 1\n")
    run_dir = build_run(tmp_path, hits=hits, judgments=judgments)
    _, qrels = load_run_judgments(run_dir, [qrels_file])
    assert grades(qrels) == {
        ("q1", "m1"): 1,  # a.jpg, a doc that is no media id: resolved as a file name
        ("q1", "m2"): 2,  # b.jpg (2) and m2 (1) merge by the maximum
        ("q1", "gone.jpg"): 1,
        ("q1", "m7"): 1,
        ("q2", "m1"): 1,
    }


def test_label_judgments_pool_every_labelled_media_of_the_run(tmp_path: Path) -> None:
    hits = [
        hit("q1", "m1", labels=["dog", "beach"]),
        hit("q1", "m2", labels=["cat"]),
        hit("q1", "m3", labels=None),  # labels unknown: stays unjudged
        hit("q2", "m4", labels=["dog"]),  # returned for another query: still in q1's pool
        hit("q2", "m5", labels=["cat"]),
    ]
    run_dir = build_run(tmp_path, hits=hits, judgments=[judgment("q1", "dog", 1, kind="label")])
    _, qrels = load_run_judgments(run_dir)
    assert grades(qrels) == {("q1", "m1"): 1, ("q1", "m4"): 1, ("q1", "m2"): 0}
    ev = evaluate_run(run_dir, measures=["R@100", "P@10", "Judged@10"])
    q1 = {
        r["measure"]: r["value"]
        for r in ev.per_query.filter(
            (pl.col("query_id") == "q1") & (pl.col("unit") == "media")
        ).iter_rows(named=True)
    }
    assert q1["R@100"] == pytest.approx(1 / 2)  # pool: m1 and m4; q1 returned m1
    assert q1["P@10"] == pytest.approx(1 / 10)
    assert q1["Judged@10"] == pytest.approx(2 / 10)  # m1 and m2; m3's labels are unknown
    assert ev.queries.filter(pl.col("query_id") == "q2")["judged"].to_list() == [False]


def test_unknown_judgment_kind_is_a_run_error(tmp_path: Path) -> None:
    run_dir = build_run(
        tmp_path, hits=[hit("q1", "m1")], judgments=[judgment("q1", "m1", kind="url")]
    )
    with pytest.raises(RunError, match="unknown kind 'url'"):
        evaluate_run(run_dir)


# --- one qrels reader: the suite loader and the evaluation read a file alike ------------------

SHARED_QRELS = (
    "# vlbench judge-todo\n"
    "\n"
    "q1 0 300dad2c-1234-11f1-8483-5a879df30de4 2\n"
    "q1 0 000000000632.jpg 1  # file name | caption with # inside\n"
    "q1 0 m3 -1\n"
    "q2\tQ0\tb.jpg\t0\n"
)


def test_suite_and_evaluation_read_the_same_qrels_alike(tmp_path: Path) -> None:
    path = write(tmp_path, SHARED_QRELS)
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        "name: t\nqueries:\n  - {id: q1, text: a}\n  - {id: q2, text: b}\n"
        f"judgments: {{qrels: {path.name}}}\n",
        encoding="utf-8",
    )
    from_suite = [(j.query_id, j.value, j.grade) for j in load_suite(suite_file).judgments_rows]
    from_eval = load_qrels(path).select("query_id", "value", "grade").rows()
    assert (
        from_suite
        == from_eval
        == [
            ("q1", "300dad2c-1234-11f1-8483-5a879df30de4", 2),
            ("q1", "000000000632.jpg", 1),
            ("q2", "b.jpg", 0),
        ]
    )


def test_bad_grade_names_file_line_and_field_in_both_readers(tmp_path: Path) -> None:
    path = write(tmp_path, "q1 0 m1 1  # fine\nq1 0 m2 +1\n")
    with pytest.raises(SuiteError) as from_eval:
        load_qrels(path)
    with pytest.raises(SuiteError) as from_suite:
        list(read_qrels(path, tmp_path))
    for caught in (from_eval.value, from_suite.value):
        assert (caught.line, caught.key, caught.reason) == (
            2,
            "grade",
            "'+1' is not a whole number",
        )
        assert str(caught).endswith(":2: grade: '+1' is not a whole number")
    assert str(from_eval.value).startswith(f"{path}:2:")
