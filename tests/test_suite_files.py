"""The files a suite names, as a clumsy user writes them: encodings, quotes, conflicting grades.

Each refusal names the data file (not the suite) and its line; warnings reach the CLI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import SuiteError
from runner.suite import Suite, load_suite
from runner.suite.fields import MAX_PAGES, MAX_QUERY_URL_BYTES

LATIN1 = "caf\xe9 au lait".encode("latin-1")  # 0xe9 alone is not UTF-8
MEDIA_A = "0b9e1a4c-6a53-5d5e-9a39-2f6c2a3f9e01"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def load(folder: Path, text: str) -> Suite:
    return load_suite(write(folder, "suite.yaml", text), env={})


# --- data files that are not UTF-8 (issue 11, defect 5) ---------------------------------------

NOT_UTF8 = [
    pytest.param(
        "queries_file: q.tsv\n", "q.tsv", b"a\tdog\nb\t" + LATIN1 + b"\n", 2, id="queries-tsv"
    ),
    pytest.param(
        "queries_file: q.csv\n", "q.csv", b"id,text\na,dog\n\nb," + LATIN1 + b"\n", 4, id="csv"
    ),
    pytest.param("queries_file: q.txt\n", "q.txt", LATIN1 + b"\n", 1, id="queries-txt"),
    pytest.param(
        "queries: [dog]\njudgments: {qrels: j.qrels}\n",
        "j.qrels",
        b"q1 0 a.jpg 1\nq1 0 " + LATIN1.replace(b" ", b"_") + b".jpg 1\n",
        2,
        id="qrels",
    ),
    pytest.param(
        "queries: [dog]\njudgments: {labels_file: l.tsv}\n",
        "l.tsv",
        b"q1\tdog\n# a comment\nq1\t" + LATIN1 + b"\n",
        3,
        id="labels-file",
    ),
]


@pytest.mark.parametrize("suite_text, name, content, line", NOT_UTF8)
def test_a_data_file_that_is_not_utf8_is_named_with_its_line(
    tmp_path: Path, suite_text: str, name: str, content: bytes, line: int
) -> None:
    data = write(tmp_path, name, content)
    with pytest.raises(SuiteError) as caught:
        load(tmp_path, "name: t\n" + suite_text)
    assert (caught.value.path, caught.value.line) == (str(data), line)
    assert "not UTF-8" in caught.value.reason and "0xe9" in caught.value.reason


def test_a_suite_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "suite.yaml", b"name: t\nqueries:\n  - " + LATIN1 + b"\n")
    with pytest.raises(SuiteError) as caught:
        load_suite(path, env={})
    assert (caught.value.path, caught.value.line) == (str(path), 3)


def test_a_utf8_bom_is_not_part_of_the_header(tmp_path: Path) -> None:
    write(tmp_path, "q.csv", "\ufeffid,text\na,a dog\n")
    suite = load(tmp_path, "name: t\nqueries_file: q.csv\n")
    assert [(q.id, q.text) for q in suite.queries] == [("a", "a dog")]


def test_cli_names_the_data_file_not_the_suite(tmp_path: Path) -> None:
    write(tmp_path, "q.tsv", b"a\t" + LATIN1 + b"\n")
    suite = write(tmp_path, "suite.yaml", "name: t\nqueries_file: q.tsv\n")
    result = CliRunner().invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2
    assert f"error: {tmp_path / 'q.tsv'}:1: not UTF-8" in result.output
    assert "suite.yaml" not in result.output


# --- CSV quotes (issue 11, defect 6) ----------------------------------------------------------

BAD_CSV = [
    pytest.param('id,text\na,"a dog\nb,a cat\n', 2, id="unclosed-swallows-next-line"),
    pytest.param('id,text\na,a dog\nb,"a cat\n', 3, id="unclosed-at-end"),
    pytest.param('id,text\na,"a dog\nb,a cat"\nc,a bird\n', 2, id="closed-a-line-later"),
    pytest.param('a,a dog\nb,"a" cat\n', 2, id="text-after-closing-quote"),
]


@pytest.mark.parametrize("content, line", BAD_CSV)
def test_csv_quote_not_closed_on_its_line_is_refused_there(
    tmp_path: Path, content: str, line: int
) -> None:
    data = write(tmp_path, "q.csv", content)
    with pytest.raises(SuiteError) as caught:
        load(tmp_path, "name: t\nqueries_file: q.csv\n")
    assert (caught.value.path, caught.value.line) == (str(data), line)


def test_csv_quotes_that_close_on_their_line_are_text(tmp_path: Path) -> None:
    write(tmp_path, "q.csv", 'id,text\na,"a dog, running"\nb,"say ""cheese"""\nc,a "big" cat\n')
    suite = load(tmp_path, "name: t\nqueries_file: q.csv\n")
    assert [q.text for q in suite.queries] == ["a dog, running", 'say "cheese"', 'a "big" cat']


def test_csv_lines_are_numbered_as_in_the_file(tmp_path: Path) -> None:
    """Blank and comment lines count, so a later error points at the right line."""
    data = write(tmp_path, "q.csv", "id,text\n\n# note\na,a dog\na,a cat\n")
    with pytest.raises(SuiteError) as caught:
        load(tmp_path, "name: t\nqueries_file: q.csv\n")
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(data), 5, "id")


# --- query texts the API refuses, pages the client will not fetch -----------------------------

HUGE = "a dog " * 20_000  # 120 KB


@pytest.mark.parametrize(
    "text, words",
    [
        pytest.param("a dog\\0on a beach", "NUL character", id="nul"),
        pytest.param(HUGE, f"no API takes more than {MAX_QUERY_URL_BYTES:,}", id="100kb"),
    ],
)
def test_inline_query_text_the_api_refuses_names_the_query(
    tmp_path: Path, text: str, words: str
) -> None:
    with pytest.raises(SuiteError) as caught:
        load(
            tmp_path,
            f'name: t\nqueries:\n  - id: ok\n    text: dog\n  - id: bad\n    text: "{text}"\n',
        )
    assert (caught.value.line, caught.value.key) == (6, "queries[1].text")
    assert "query 'bad'" in caught.value.reason and words in caught.value.reason


@pytest.mark.parametrize("name", ["q.tsv", "q.csv"])
@pytest.mark.parametrize("text", [HUGE, "a dog\0on a beach"], ids=["100kb", "nul"])
def test_file_query_text_the_api_refuses_names_file_line_and_query(
    tmp_path: Path, name: str, text: str
) -> None:
    sep = "\t" if name.endswith(".tsv") else ","
    data = write(tmp_path, name, f"ok{sep}a dog\nbad{sep}{text}\n")
    with pytest.raises(SuiteError) as caught:
        load(tmp_path, f"name: t\nqueries_file: {name}\n")
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(data), 2, "text")
    assert "query 'bad'" in caught.value.reason


def test_a_long_text_short_of_the_bound_is_left_to_the_api(tmp_path: Path) -> None:
    """The local server refuses 2,049 characters with a 422; the hosted limit is not known."""
    suite = load(tmp_path, f"name: t\nqueries: [{'dog ' * 600}]\n")
    assert len(suite.queries[0].text or "") == 2399


def test_max_pages_above_the_client_cap_is_refused_with_the_cap(tmp_path: Path) -> None:
    with pytest.raises(SuiteError) as caught:
        load(tmp_path, "name: t\nqueries: [dog]\npagination: {max_pages: 100000}\n")
    assert (caught.value.line, caught.value.key) == (3, "pagination.max_pages")
    assert f"more than the {MAX_PAGES:,} a request fetches" in caught.value.reason
    suite = load(tmp_path, f"name: t\nqueries: [dog]\npagination: {{max_pages: {MAX_PAGES}}}\n")
    assert suite.pagination.max_pages == MAX_PAGES


def test_the_client_stops_at_the_suite_cap() -> None:
    from runner.execute._types import PAGE_CAP

    assert PAGE_CAP == MAX_PAGES


# --- conflicting grades, judgments of unknown queries ----------------------------------------

JUDGED = "name: t\nqueries: [dog, cat]\njudgments:\n  qrels: [a.qrels, b.qrels]\n"


def grades(suite: Suite) -> dict[tuple[str, str], int]:
    return {(j.query_id, j.value): j.grade for j in suite.judgments_rows}


def test_conflicting_grades_are_refused_at_the_later_line(tmp_path: Path) -> None:
    first = write(tmp_path, "a.qrels", "q1 0 x.jpg 2\nq1 0 y.jpg 1\n")
    later = write(tmp_path, "b.qrels", "q2 0 x.jpg 1\n\nq1 0 x.jpg 0\n")
    with pytest.raises(SuiteError) as caught:
        load(tmp_path, JUDGED)
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(later), 3, "grade")
    assert f"graded 0 here but 2 at {first}:1" in caught.value.reason
    assert "judgments.on_conflict" in caught.value.reason


@pytest.mark.parametrize(
    "how, grade", [("max", 2), ("min", 0), ("last", 1)], ids=["max", "min", "last"]
)
def test_on_conflict_says_which_grade_stands(tmp_path: Path, how: str, grade: int) -> None:
    write(tmp_path, "a.qrels", "q1 0 x.jpg 2\nq1 0 y.jpg 1\n")
    write(tmp_path, "b.qrels", "q1 0 x.jpg 0\nq1 0 x.jpg 1\n")
    suite = load(tmp_path, JUDGED + f"  on_conflict: {how}\n")
    assert grades(suite) == {("q1", "x.jpg"): grade, ("q1", "y.jpg"): 1}
    assert [j.value for j in suite.judgments_rows] == ["x.jpg", "y.jpg"]  # first-line order


def test_a_repeated_grade_is_one_judgment(tmp_path: Path) -> None:
    write(tmp_path, "a.qrels", "q1 0 x.jpg 2\n")
    write(tmp_path, "b.qrels", "q1 0 x.jpg 2\n")
    assert len(load(tmp_path, JUDGED).judgments_rows) == 1


def test_unknown_on_conflict_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.qrels", "")
    write(tmp_path, "b.qrels", "")
    with pytest.raises(SuiteError) as caught:
        load(tmp_path, JUDGED + "  on_conflict: mean\n")
    assert (caught.value.line, caught.value.key) == (5, "judgments.on_conflict")


def test_judgments_of_unknown_queries_warn_with_count_and_first(tmp_path: Path) -> None:
    qrels = write(tmp_path, "a.qrels", "q1 0 x.jpg 1\nq9 0 x.jpg 1\nq9 0 y.jpg 1\nq8 0 x.jpg 1\n")
    write(tmp_path, "b.qrels", "")
    write(tmp_path, "l.tsv", "q7\tdog\n")
    suite = load(tmp_path, JUDGED + "  labels_file: l.tsv\n")
    assert suite.warnings == (
        f"{qrels}:2: 4 judgment line(s) name 3 query id(s) this suite does not have "
        "(the first: 'q9'); they judge nothing here",
    )


def test_a_suite_whose_judgments_all_fit_has_no_warning(tmp_path: Path) -> None:
    write(tmp_path, "a.qrels", "q1 0 x.jpg 1\n")
    write(tmp_path, "b.qrels", "q2 0 x.jpg 1\n")
    assert load(tmp_path, JUDGED).warnings == ()


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_cli_prints_the_warning_and_still_succeeds(tmp_path: Path, command: str) -> None:
    write(tmp_path, "a.qrels", "q1 0 x.jpg 1\nq9 0 x.jpg 1\n")
    write(tmp_path, "b.qrels", "")
    suite = write(tmp_path, "suite.yaml", JUDGED)
    result = CliRunner().invoke(app, [command, str(suite)])
    assert result.exit_code == 0
    assert f"warning: {tmp_path / 'a.qrels'}:2: 1 judgment line(s)" in result.stderr


def test_a_queries_file_may_give_anchors_in_a_column(tmp_path: Path) -> None:
    """A queries file may give anchors too (visual search), in a column of its own."""
    write(tmp_path, "q.tsv", f"id\ttext\tanchor\nt\ta dog\t\nv\t\t{MEDIA_A}\nb\ta cat\t{MEDIA_A}\n")
    suite = load(tmp_path, "name: t\nqueries_file: q.tsv\n")
    assert [(q.id, q.text, q.anchor) for q in suite.queries] == [
        ("t", "a dog", None),
        ("v", None, MEDIA_A),
        ("b", "a cat", MEDIA_A),
    ]


def test_run_prints_the_warning_before_it_starts(tmp_path: Path) -> None:
    """Here the API is unreachable (a closed port): the warning is out before the run fails."""
    write(tmp_path, "a.qrels", "q9 0 x.jpg 1\n")
    write(tmp_path, "b.qrels", "")
    text = JUDGED + (
        "base_url: http://127.0.0.1:1\ndataset_id: d\ntimeout_s: 2\nretries: {max_attempts: 1}\n"
    )
    suite = write(tmp_path, "suite.yaml", text)
    result = CliRunner().invoke(
        app,
        ["run", str(suite), "--out", str(tmp_path / "out"), "-q", "--no-report"],
        env={"VL_TOKEN": "not-a-real-token"},
    )
    assert result.exit_code != 0
    assert result.stderr.startswith(f"warning: {tmp_path / 'a.qrels'}:1: 1 judgment line(s)")
