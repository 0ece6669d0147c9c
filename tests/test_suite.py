"""The suite loader: every refusal names file, line and key; interpolation; files; judgments."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyarrow as pa
import pytest

from runner.errors import SuiteError
from runner.evaluate import load_qrels
from runner.schema import JUDGMENTS_SCHEMA
from runner.suite import Suite, judgments_table, load_suite, parse_suite, suite_hash

QUERIES_DIR = Path(__file__).resolve().parent.parent / "queries"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ2bGJlbmNoIn0.c2lnbmF0dXJl"  # a JWT-shaped value
# Three lines every case starts from: a valid suite of one query.
BASE = "name: t\nqueries:\n  - {id: a, text: a dog on a beach}\n"
AFTER_BASE = 4  # the first line a case appends


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, **env: str) -> Suite:
    return load_suite(path, env=env)


# (text, line, key, words of the reason)
BAD_SUITES = [
    pytest.param("name: t\n  bad: x\n", 2, "", "not valid YAML", id="bad-yaml"),
    pytest.param(
        BASE + "queries_file: [a\n", AFTER_BASE + 1, "", "not valid YAML", id="bad-yaml-eof"
    ),
    pytest.param(BASE + "nmae: x\n", AFTER_BASE, "nmae", "did you mean 'name'", id="unknown-key"),
    pytest.param(
        BASE + "sweep:\n  semantic_treshold: [0.5]\n",
        AFTER_BASE + 1,
        "sweep.semantic_treshold",
        "unknown key",
        id="unknown-nested-key",
    ),
    pytest.param(
        BASE + "defaults: {threshold: 1}\n",
        AFTER_BASE,
        "defaults.threshold",
        "spelled 'granularity'",
        id="renamed-key",
    ),
    pytest.param(
        BASE + "name: u\n", AFTER_BASE, "name", "duplicate key (first at line 1)", id="dup-yaml-key"
    ),
    pytest.param(
        BASE + "concurrency: many\n",
        AFTER_BASE,
        "concurrency",
        "expected a whole number, got 'many'",
        id="wrong-type",
    ),
    pytest.param(
        BASE + "concurrency: true\n",
        AFTER_BASE,
        "concurrency",
        "expected a number, got True",
        id="bool-for-int",
    ),
    pytest.param(
        "name: t\nqueries:\n  - {id: a, text: 1984}\n",
        3,
        "queries[0].text",
        "expected text, got 1984",
        id="int-for-text",
    ),
    pytest.param(
        BASE + "modes:\n  x: {via: carrier}\n",
        AFTER_BASE + 1,
        "modes.x.via",
        "unknown via",
        id="unknown-via",
    ),
    pytest.param(
        BASE + "modes:\n  x: {via: vql, op: regex}\n",
        AFTER_BASE + 1,
        "modes.x.op",
        "unknown op",
        id="unknown-op",
    ),
    pytest.param(
        BASE + "modes:\n  x:\n    via: vql\n",
        AFTER_BASE + 1,
        "modes.x.op",
        "needs op",
        id="vql-without-op",
    ),
    pytest.param(
        BASE + "modes:\n  x:\n    via: caption\n    op: fts\n",
        AFTER_BASE + 3,
        "modes.x.op",
        "takes no op",
        id="caption-with-op",
    ),
    pytest.param(
        BASE + "modes:\n  - caption\n  - captoin\n",
        AFTER_BASE + 2,
        "modes[1]",
        "unknown mode 'captoin'",
        id="unknown-mode",
    ),
    pytest.param(
        BASE + "modes:\n  a: {via: caption}\n  b: {via: caption}\n",
        AFTER_BASE + 2,
        "modes.b",
        "same requests as mode 'a'",
        id="twin-modes",
    ),
    pytest.param(BASE + "modes: {}\n", AFTER_BASE, "modes", "no modes", id="no-modes"),
    pytest.param(
        BASE + "sweep:\n  textual_similarity_threshold: [0.3,\n    1.4]\n",
        AFTER_BASE + 2,
        "sweep.textual_similarity_threshold[1]",
        "1.4 is not within 0..1",
        id="tst-above-1",
    ),
    pytest.param(
        BASE + "sweep:\n  semantic_threshold:\n    - 0.5\n    - -0.1\n",
        AFTER_BASE + 3,
        "sweep.semantic_threshold[1]",
        "-0.1 is not within 0..1",
        id="semantic-below-0",
    ),
    pytest.param(
        BASE + "sweep:\n  semantic_threshold: 1.5\n",
        AFTER_BASE + 1,
        "sweep.semantic_threshold",
        "1.5 is not within 0..1",
        id="semantic-scalar-above-1",
    ),
    pytest.param(
        BASE + "sweep:\n  semantic_threshold: [0.5, 0.6, 0.5]\n",
        AFTER_BASE + 1,
        "sweep.semantic_threshold[2]",
        "listed twice",
        id="repeated-sweep-value",
    ),
    pytest.param(
        BASE + "defaults:\n  granularity: 5\n",
        AFTER_BASE + 1,
        "defaults.granularity",
        "5 is not within 0..4",
        id="granularity-above-4",
    ),
    pytest.param(
        BASE + "sweep:\n  granularity:\n    - 0\n    - -1\n",
        AFTER_BASE + 3,
        "sweep.granularity[1]",
        "-1 is not within 0..4",
        id="granularity-sweep-below-0",
    ),
    pytest.param(
        BASE + "defaults: {entity_type: IMAGE}\n",
        AFTER_BASE,
        "defaults.entity_type",
        "unknown entity_type 'IMAGE'",
        id="unknown-entity-type",
    ),
    pytest.param(
        BASE + "  - {id: b, text: a cat}\n  - {id: a, text: a bus}\n",
        AFTER_BASE + 1,
        "queries[2].id",
        "duplicate query id 'a'",
        id="duplicate-query-id",
    ),
    pytest.param(
        "name: t\nqueries:\n  - {id: a b, text: x}\n",
        3,
        "queries[0].id",
        "no whitespace",
        id="query-id-space",
    ),
    pytest.param(
        "name: t\nqueries:\n  - id: a\n", 3, "queries[0].text", "is required", id="query-no-text"
    ),
    pytest.param(
        "name: t\nqueries:\n  - id: a\n    text: x\n    labels: []\n",
        5,
        "queries[0].labels",
        "empty labels filter",
        id="empty-labels-filter",
    ),
    pytest.param("name: t\nqueries: []\n", 2, "queries", "no queries", id="empty-queries"),
    pytest.param("name: t\n", 1, "queries", "no queries", id="no-queries"),
    pytest.param("queries:\n  - {id: a, text: x}\n", 1, "name", "is required", id="no-name"),
    pytest.param("name: a/b\nqueries: [x]\n", 1, "name", "names a folder", id="name-with-slash"),
    pytest.param(
        BASE + "judgments:\n  qrels: missing.qrels\n",
        AFTER_BASE + 1,
        "judgments.qrels",
        "no such file",
        id="missing-qrels",
    ),
    pytest.param(
        BASE + "judgments:\n  qrels:\n    - ok.qrels\n    - missing.qrels\n",
        AFTER_BASE + 3,
        "judgments.qrels[1]",
        "no such file",
        id="missing-second-qrels",
    ),
    pytest.param(
        BASE + "judgments:\n  labels_file: missing.tsv\n",
        AFTER_BASE + 1,
        "judgments.labels_file",
        "no such file",
        id="missing-labels-file",
    ),
    pytest.param(
        BASE + "queries_file: missing.txt\n",
        AFTER_BASE,
        "queries_file",
        "no such file",
        id="missing-queries-file",
    ),
    pytest.param(
        BASE + "judgments:\n  by_labels:\n    zz: [car]\n",
        AFTER_BASE + 2,
        "judgments.by_labels.zz",
        "not a query id",
        id="by-labels-unknown-query",
    ),
    pytest.param(
        BASE + "concurrency: 0\n",
        AFTER_BASE,
        "concurrency",
        "greater than 0",
        id="zero-concurrency",
    ),
    pytest.param(
        BASE + "concurrency: -1\n",
        AFTER_BASE,
        "concurrency",
        "greater than 0",
        id="negative-concurrency",
    ),
    pytest.param(
        BASE + "rate_limit: 0\n", AFTER_BASE, "rate_limit", "greater than 0", id="zero-rate"
    ),
    pytest.param(
        BASE + "rate_limit: -5/s\n", AFTER_BASE, "rate_limit", "not a rate", id="negative-rate"
    ),
    pytest.param(
        BASE + "rate_limit: 0/min\n",
        AFTER_BASE,
        "rate_limit",
        "greater than 0",
        id="zero-rate-text",
    ),
    pytest.param(
        BASE + "rate_limit: ten per second\n",
        AFTER_BASE,
        "rate_limit",
        "not a rate",
        id="rate-words",
    ),
    pytest.param(
        BASE + "rate_limit:\n  requests: 10\n  per_seconds: 0\n",
        AFTER_BASE + 2,
        "rate_limit.per_seconds",
        "greater than 0",
        id="rate-mapping-zero-period",
    ),
    pytest.param(
        BASE + "rate_limit: {requests: 10, per: 1}\n",
        AFTER_BASE,
        "rate_limit.per",
        "unknown key",
        id="rate-mapping-unknown-key",
    ),
    pytest.param(
        BASE + "rate_limit: .nan\n", AFTER_BASE, "rate_limit", "greater than 0", id="nan-rate"
    ),
    pytest.param(
        BASE + "timeout_s: 0\n", AFTER_BASE, "timeout_s", "greater than 0", id="zero-timeout"
    ),
    pytest.param(
        BASE + "retries: {max_attempts: 0}\n",
        AFTER_BASE,
        "retries.max_attempts",
        "greater than 0",
        id="zero-attempts",
    ),
    pytest.param(
        BASE + "pagination:\n  max_pages: 0\n",
        AFTER_BASE + 1,
        "pagination.max_pages",
        "not a page count",
        id="zero-pages",
    ),
    pytest.param(
        BASE + "pagination: {max_pages: some}\n",
        AFTER_BASE,
        "pagination.max_pages",
        "not a page count",
        id="pages-word",
    ),
    pytest.param(
        BASE + "base_url: https://app.example.com\n",
        AFTER_BASE,
        "base_url",
        "needs a dataset_id",
        id="url-without-dataset",
    ),
    pytest.param(
        BASE + "base_url: ftp://x\n", AFTER_BASE, "base_url", "not an http(s) URL", id="bad-url"
    ),
    pytest.param(
        BASE + "dataset_id: ${VLB_UNSET}\n",
        AFTER_BASE,
        "dataset_id",
        "VLB_UNSET is not set and has no default",
        id="unset-variable",
    ),
    pytest.param(
        BASE + "description: cost ${oops\n",
        AFTER_BASE,
        "description",
        "not closed",
        id="unclosed-reference",
    ),
    pytest.param(
        BASE + f"auth:\n  token_env: {TOKEN}\n",
        AFTER_BASE + 1,
        "auth.token_env",
        "must name an environment variable",
        id="literal-token-in-token-env",
    ),
    pytest.param(
        BASE + f"auth:\n  token: {TOKEN}\n",
        AFTER_BASE + 1,
        "auth.token",
        "credential in a suite is refused",
        id="literal-token-key",
    ),
    pytest.param("- a\n- b\n", 1, "", "a suite is a mapping", id="not-a-mapping"),
    pytest.param("", 1, "", "the suite is empty", id="empty-file"),
]


@pytest.mark.parametrize("text, line, key, reason", BAD_SUITES)
def test_bad_suite_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, reason: str
) -> None:
    write(tmp_path, "a 0 x.jpg 1\n", "ok.qrels")
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as caught:
        load(path)
    where = f"{path}:{line}: " + (f"{key}: " if key else "")
    assert str(caught.value).startswith(where), str(caught.value)
    assert reason in str(caught.value)
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(path), line, key)
    assert caught.value.exit_code == 2


def test_secrets_never_appear_in_a_refusal(tmp_path: Path) -> None:
    cases = [
        BASE + f"auth:\n  token_env: {TOKEN}\n",
        BASE + f"auth:\n  api_secret: {TOKEN}\n",
        BASE + "concurrency: ${VL_TOKEN}\n",  # a secret interpolated into the wrong place
        BASE + "auth: {token_env: ${VL_TOKEN}}\n",
        BASE + f"description: [{TOKEN}\n",  # bad YAML next to a token
    ]
    for text in cases:
        with pytest.raises(SuiteError) as caught:
            load(write(tmp_path, text), VL_TOKEN=TOKEN)
        assert TOKEN not in str(caught.value)
        assert TOKEN[:12] not in str(caught.value)


def test_the_first_error_by_line_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "concurrency: 0\ntimeout_s: 0\n")
    with pytest.raises(SuiteError, match=rf":{AFTER_BASE}: concurrency:"):
        load(path)


def test_missing_suite_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no such file"):
        load(tmp_path / "nope.yaml")


# --- interpolation ----------------------------------------------------------------------------


def test_interpolation_with_and_without_defaults(tmp_path: Path) -> None:
    text = (
        "name: ${NAME}\n"
        "dataset_id: ${DATASET:-demo}\n"
        "base_url: ${URL:-embedded}\n"
        "concurrency: ${N:-8}\n"  # typed after replacement: an integer
        "description: '${N:-8} costs $$5 at ${SITE:-}'\n"  # quoted: stays a string
        "queries:\n  - {id: a, text: '${WHAT} on a beach'}\n"
    )
    suite = load(write(tmp_path, text), NAME="nightly", WHAT="a dog", N="")
    assert suite.name == "nightly"
    assert suite.dataset_id == "demo"
    assert suite.base_url is None  # embedded
    assert suite.concurrency == 8  # N set but empty: `:-` takes the default
    assert suite.description == "8 costs $5 at "
    assert suite.queries[0].text == "a dog on a beach"
    suite = load(write(tmp_path, text), NAME="n2", WHAT="x", N="3", URL="http://h:1/", DATASET="d1")
    assert (suite.concurrency, suite.base_url, suite.dataset_id) == (3, "http://h:1", "d1")


def test_interpolation_is_not_applied_to_keys_or_escapes(tmp_path: Path) -> None:
    text = BASE + "description: $${NOT_A_VAR} and $$${X:-y} and $$$${X:-y}\n"
    assert load(write(tmp_path, text)).description == "${NOT_A_VAR} and $y and $${X:-y}"
    with pytest.raises(SuiteError, match=r"unknown key '\$\{KEY\}'"):
        load(write(tmp_path, BASE + "${KEY}: 1\n"), KEY="name")


def test_interpolated_number_is_checked_like_a_literal(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + 'sweep:\n  semantic_threshold: [0.5, "${T:-0.9}"]\n')
    assert load(path).sweep.semantic_threshold == (0.5, 0.9)
    with pytest.raises(SuiteError, match=rf":{AFTER_BASE + 1}: sweep.semantic_threshold\[1\]:"):
        load(path, T="1.7")


def test_environment_comes_from_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLB_TEST_NAME", "from-env")
    assert (
        load_suite(write(tmp_path, BASE.replace("name: t", "name: ${VLB_TEST_NAME}"))).name
        == "from-env"
    )


# --- forms and defaults -----------------------------------------------------------------------


def test_defaults_of_a_minimal_suite(tmp_path: Path) -> None:
    suite = load(write(tmp_path, BASE))
    assert suite.base_url is None and suite.dataset_id is None
    assert list(suite.modes) == ["caption", "fts", "semantic"]
    assert (suite.auth.token_env, suite.auth.api_key_env, suite.auth.api_secret_env) == (
        "VL_TOKEN",
        "VL_API_KEY",
        "VL_API_SECRET",
    )
    assert suite.defaults.entity_type == "IMAGES" and suite.defaults.threshold == 0
    assert suite.pagination.max_pages == 1
    assert suite.source_path == (tmp_path / "suite.yaml").resolve()


@pytest.mark.parametrize(
    "text, per_second",
    [
        pytest.param("10", 10.0, id="number"),
        pytest.param("2.5", 2.5, id="float"),
        pytest.param("10/s", 10.0, id="per-second"),
        pytest.param("600/min", 10.0, id="per-minute"),
        pytest.param("7200/h", 2.0, id="per-hour"),
        pytest.param("{requests: 10, per_seconds: 4}", 10 / 4, id="mapping"),
        pytest.param("{requests: 3}", 3.0, id="mapping-default-period"),
        pytest.param("unlimited", math.inf, id="unlimited"),
        pytest.param(".inf", math.inf, id="infinity"),
    ],
)
def test_rate_limit_forms(tmp_path: Path, text: str, per_second: float) -> None:
    assert load(write(tmp_path, BASE + f"rate_limit: {text}\n")).rate_limit == pytest.approx(
        per_second
    )


def test_modes_as_a_list_of_builtins_and_as_a_mapping(tmp_path: Path) -> None:
    suite = load(write(tmp_path, BASE + "modes: [semantic, caption]\n"))
    assert list(suite.modes) == ["semantic", "caption"]
    assert suite.modes["semantic"].kind == "semantic" and suite.modes["caption"].via == "caption"
    suite = load(write(tmp_path, BASE + "modes:\n  keywords: {via: vql, op: fts}\n"))
    assert suite.modes["keywords"].kind == "fts"


def test_single_values_where_lists_are_expected(tmp_path: Path) -> None:
    text = BASE + "sweep: {semantic_threshold: 0.7, granularity: 2}\n"
    suite = load(write(tmp_path, text))
    assert suite.sweep.semantic_threshold == (0.7,) and suite.sweep.granularity == (2,)


def test_bare_string_queries_get_positional_ids(tmp_path: Path) -> None:
    suite = load(
        write(tmp_path, "name: t\nqueries:\n  - a dog\n  - {id: x, text: a cat}\n  - a bus\n")
    )
    assert [(q.id, q.text) for q in suite.queries] == [
        ("q1", "a dog"),
        ("x", "a cat"),
        ("q3", "a bus"),
    ]


def test_numeric_query_ids_become_strings(tmp_path: Path) -> None:
    suite = load(write(tmp_path, "name: t\nqueries:\n  - {id: 7, text: a dog, labels: dog}\n"))
    assert suite.queries[0].id == "7" and suite.queries[0].labels == ("dog",)


# --- queries files ----------------------------------------------------------------------------


def test_queries_file_one_query_a_line(tmp_path: Path) -> None:
    write(tmp_path, "# demo\na dog on a beach\n\n  a red bus  \n", "q.txt")
    suite = load(write(tmp_path, "name: t\nqueries_file: q.txt\n"))
    assert [(q.id, q.text, q.labels) for q in suite.queries] == [
        ("q1", "a dog on a beach", None),
        ("q2", "a red bus", None),
    ]
    assert suite.queries_file == (tmp_path / "q.txt").resolve()


def test_queries_file_tsv_with_labels(tmp_path: Path) -> None:
    write(
        tmp_path, 'id\ttext\tlabels\ndog\ta "dog" on a beach\tdog, animal\nbus\ta bus\t\n', "q.tsv"
    )
    suite = load(write(tmp_path, "name: t\nqueries_file: q.tsv\n"))
    assert [(q.id, q.text, q.labels) for q in suite.queries] == [
        ("dog", 'a "dog" on a beach', ("dog", "animal")),
        ("bus", "a bus", None),
    ]


def test_queries_file_tsv_without_header_is_id_text_labels(tmp_path: Path) -> None:
    write(tmp_path, "# id, text, labels\ndog\ta dog\tdog\ncat\ta cat\t\n", "q.tsv")
    suite = load(write(tmp_path, "name: t\nqueries_file: q.tsv\n"))
    assert [(q.id, q.text, q.labels) for q in suite.queries] == [
        ("dog", "a dog", ("dog",)),
        ("cat", "a cat", None),
    ]


def test_queries_file_csv_without_labels_column(tmp_path: Path) -> None:
    write(tmp_path, 'text,id\n"a dog, running",d1\na cat,c1\n', "q.csv")
    suite = load(write(tmp_path, "name: t\nqueries_file: q.csv\n"))
    assert [(q.id, q.text) for q in suite.queries] == [("d1", "a dog, running"), ("c1", "a cat")]


def test_inline_and_file_queries_combine(tmp_path: Path) -> None:
    write(tmp_path, "id\ttext\nb\ta cat\n", "q.tsv")
    suite = load(write(tmp_path, BASE + "queries_file: q.tsv\n"))
    assert [q.id for q in suite.queries] == ["a", "b"]


def test_queries_file_in_a_folder_resolves_against_the_suite(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path, "a dog\n", "sub/q.txt")
    suite = load(write(tmp_path, "name: t\nqueries_file: q.txt\n", "sub/suite.yaml"))
    assert suite.queries[0].text == "a dog"


@pytest.mark.parametrize(
    "name, content, line, key, reason",
    [
        pytest.param(
            "q.tsv", "id\tquery\nq\tx\n", 1, "", "header names id, text", id="tsv-bad-header"
        ),
        pytest.param(
            "q.tsv", "id\ttext\na\tx\nb\n", 3, "", "expected 2 columns", id="tsv-short-row"
        ),
        pytest.param("q.tsv", "a\tx\nb\n", 2, "", "expected 2 columns", id="tsv-no-header-short"),
        pytest.param("q.tsv", "a\n", 1, "", "expected 2 columns", id="tsv-one-column"),
        pytest.param(
            "q.tsv", "id\ttext\na\tx\na\ty\n", 3, "id", "duplicate query id 'a'", id="tsv-dup-id"
        ),
        pytest.param("q.tsv", "id\ttext\na b\tx\n", 2, "id", "no whitespace", id="tsv-id-space"),
        pytest.param("q.csv", "id,text\na,\n", 2, "text", "must not be empty", id="csv-empty-text"),
    ],
)
def test_bad_queries_file_names_its_line(
    tmp_path: Path, name: str, content: str, line: int, key: str, reason: str
) -> None:
    queries = write(tmp_path, content, name)
    with pytest.raises(SuiteError) as caught:
        load(write(tmp_path, f"name: t\nqueries_file: {name}\n"))
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(queries), line, key)
    assert reason in str(caught.value)


def test_file_query_clashing_with_inline_query(tmp_path: Path) -> None:
    queries = write(tmp_path, "id\ttext\na\ta cat\n", "q.tsv")
    with pytest.raises(
        SuiteError, match=rf"^{re.escape(str(queries))}:2: id: duplicate query id 'a'"
    ):
        load(write(tmp_path, BASE + "queries_file: q.tsv\n"))


def test_a_loaded_suite_validates_again_to_itself(tmp_path: Path) -> None:
    write(tmp_path, "id\ttext\nb\ta cat\nc\ta bus\n", "q.tsv")
    write(tmp_path, "b 0 x.jpg 1\n", "j.qrels")
    suite = load(write(tmp_path, BASE + "queries_file: q.tsv\njudgments: {qrels: j.qrels}\n"))
    again = Suite.model_validate(suite.model_dump(mode="json"))
    assert again.model_dump() == suite.model_dump()
    assert [q.id for q in again.queries] == ["a", "b", "c"]
    assert again.judgments_rows == suite.judgments_rows


def test_duplicate_id_in_plain_queries_is_impossible(tmp_path: Path) -> None:
    write(tmp_path, "a dog\na dog\n", "q.txt")  # same text twice: two queries, two ids
    assert [q.id for q in load(write(tmp_path, "name: t\nqueries_file: q.txt\n")).queries] == [
        "q1",
        "q2",
    ]


# --- judgments --------------------------------------------------------------------------------

MEDIA = "300dad2c-1234-11f1-8483-5a879df30de4"


def test_judgments_table_kinds_and_sources(tmp_path: Path) -> None:
    write(
        tmp_path, f"# comment\na 0 {MEDIA} 2\na 0 000000000632.jpg 1\nother 0 b.jpg 0\n", "j.qrels"
    )
    write(tmp_path, "query_id\tlabels\na\tdog, animal\n", "labels.tsv")
    text = (
        BASE
        + "judgments:\n  qrels: j.qrels\n  by_labels: {a: [beach]}\n  labels_file: labels.tsv\n"
    )
    table = judgments_table(load(write(tmp_path, text)))
    assert table.schema == JUDGMENTS_SCHEMA
    assert sorted(table.to_pylist(), key=lambda r: (r["source"], r["value"])) == [
        {"query_id": "a", "kind": "label", "value": "beach", "grade": 1, "source": "by_labels"},
        {
            "query_id": "a",
            "kind": "label",
            "value": "animal",
            "grade": 1,
            "source": "labels_file:labels.tsv",
        },
        {
            "query_id": "a",
            "kind": "label",
            "value": "dog",
            "grade": 1,
            "source": "labels_file:labels.tsv",
        },
        {
            "query_id": "a",
            "kind": "file_name",
            "value": "000000000632.jpg",
            "grade": 1,
            "source": "qrels:j.qrels",
        },
        {
            "query_id": "a",
            "kind": "media_id",
            "value": MEDIA,
            "grade": 2,
            "source": "qrels:j.qrels",
        },
        {
            "query_id": "other",
            "kind": "file_name",
            "value": "b.jpg",
            "grade": 0,
            "source": "qrels:j.qrels",
        },
    ]


def test_several_qrels_files(tmp_path: Path) -> None:
    write(tmp_path, "a 0 x.jpg 1\n", "one.qrels")
    write(tmp_path, "a 0 y.jpg 3\n", "two.qrels")
    suite = load(write(tmp_path, BASE + "judgments: {qrels: [one.qrels, two.qrels]}\n"))
    table = judgments_table(suite)
    assert table.column("value").to_pylist() == ["x.jpg", "y.jpg"]
    assert table.column("grade").to_pylist() == [1, 3]


def test_no_judgments_is_an_empty_table(tmp_path: Path) -> None:
    table = judgments_table(load(write(tmp_path, BASE)))
    assert isinstance(table, pa.Table) and table.num_rows == 0 and table.schema == JUDGMENTS_SCHEMA


@pytest.mark.parametrize(
    "name, content, line, key, reason",
    [
        pytest.param(
            "j.qrels", "a 0 x.jpg 1\na 0 y.jpg\n", 2, "", "expected 4 fields", id="qrels-3-fields"
        ),
        pytest.param(
            "j.qrels",
            "a 0 x.jpg high\n",
            1,
            "grade",
            "'high' is not a whole number",
            id="qrels-grade",
        ),
        pytest.param("l.tsv", "a\n", 1, "", "expected 2 tab-separated fields", id="labels-1-field"),
        pytest.param("l.tsv", "a\t , \n", 1, "labels", "must not be empty", id="labels-empty"),
    ],
)
def test_malformed_judgment_file_names_its_line(
    tmp_path: Path, name: str, content: str, line: int, key: str, reason: str
) -> None:
    bad = write(tmp_path, content, name)
    field = "qrels" if name.endswith(".qrels") else "labels_file"
    with pytest.raises(SuiteError) as caught:
        load(write(tmp_path, BASE + f"judgments: {{{field}: {name}}}\n"))
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(bad), line, key)
    assert reason in str(caught.value)


# --- hash and the shipped suites --------------------------------------------------------------


def test_suite_hash_is_stable_and_ignores_order_and_pace(tmp_path: Path) -> None:
    text = (
        "name: t\nsweep: {semantic_threshold: [0.5]}\n"
        "queries:\n  - {id: a, text: x}\n  - {id: b, text: y}\n"
    )
    reordered = (
        "queries:\n  - {text: y, id: b}\n  - {id: a, text: x}\nrate_limit: 1/s\n"
        "concurrency: 1\nsweep: {semantic_threshold: [0.5]}\nname: t\n"
    )
    first = suite_hash(load(write(tmp_path, text, "a.yaml")))
    assert first == suite_hash(load(write(tmp_path, text, "a.yaml")))
    assert first == suite_hash(load(write(tmp_path, reordered, "b.yaml")))
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    changed = text.replace("text: y", "text: z")
    assert first != suite_hash(load(write(tmp_path, changed, "c.yaml")))


def test_suite_hash_follows_judgments(tmp_path: Path) -> None:
    qrels = write(tmp_path, "a 0 x.jpg 1\n", "j.qrels")
    path = write(tmp_path, BASE + "judgments: {qrels: j.qrels}\n")
    before = suite_hash(load(path))
    qrels.write_text("a 0 x.jpg 2\n")
    assert suite_hash(load(path)) != before


def test_parse_suite_anchors_paths_at_the_given_path(tmp_path: Path) -> None:
    write(tmp_path, "a dog\n", "q.txt")
    suite = parse_suite("name: t\nqueries_file: q.txt\n", path=tmp_path / "virtual.yaml", env={})
    assert suite.queries[0].text == "a dog"


SHIPPED = sorted(QUERIES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_suites_load_with_no_environment(path: Path) -> None:
    suite = load_suite(path, env={})
    assert suite.queries and suite.modes
    assert suite.base_url is None  # runnable against the embedded server as shipped


def test_demo_suite_is_shipped() -> None:
    assert (QUERIES_DIR / "demo.yaml") in SHIPPED and (QUERIES_DIR / "example.yaml") in SHIPPED


# --- values from the environment never shown --------------------------------------------------

SECRET = "hunter2-XyZ-s3cret"  # a distinctive string that no key accepts
NUMBER = "31337.4242"  # a distinctive number out of range where it is put; `:g` shows 31337.4
# (text appended to BASE, line, key, the env var, its value, words of the reason)
INTERPOLATED_BAD = [
    pytest.param("rate_limit: ${R}\n", 0, "rate_limit", "R", SECRET, "is not a rate", id="rate"),
    pytest.param(
        "rate_limit: ${R}\n", 0, "rate_limit", "R", f"-{NUMBER}", "greater than 0", id="rate-<0"
    ),
    pytest.param(
        "rate_limit:\n  requests: ${R}\n",
        1,
        "rate_limit.requests",
        "R",
        SECRET,
        "greater than 0",
        id="rate-requests",
    ),
    pytest.param(
        "dataset_id: d\nbase_url: ${U}\n",
        1,
        "base_url",
        "U",
        f"ftp://user:{SECRET}@host/x",
        "is not an http(s) URL",
        id="base-url",
    ),
    pytest.param(
        "pagination:\n  max_pages: ${P}\n",
        1,
        "pagination.max_pages",
        "P",
        SECRET,
        "is not a page count",
        id="max-pages",
    ),
    pytest.param(
        "pagination:\n  max_pages: ${P}\n",
        1,
        "pagination.max_pages",
        "P",
        "-31337",
        "is not a page count",
        id="max-pages-negative",
    ),
    pytest.param(
        "concurrency: ${N}\n", 0, "concurrency", "N", SECRET, "a whole number", id="concurrency"
    ),
    pytest.param(
        "concurrency: ${N}\n", 0, "concurrency", "N", "-31337", "greater than 0", id="conc-<0"
    ),
    pytest.param(
        "timeout_s: ${T}\n", 0, "timeout_s", "T", f"-{NUMBER}", "greater than 0", id="timeout"
    ),
    pytest.param(
        'sweep:\n  semantic_threshold: [0.5, "${T}"]\n',
        1,
        "sweep.semantic_threshold[1]",
        "T",
        NUMBER,
        "is not within 0..1",
        id="sweep-threshold",
    ),
    pytest.param(
        'sweep:\n  textual_similarity_threshold: "${T}"\n',
        1,
        "sweep.textual_similarity_threshold",
        "T",
        SECRET,
        "expected a number",
        id="sweep-threshold-text",
    ),
    pytest.param(
        'sweep:\n  granularity: ["${G}"]\n',
        1,
        "sweep.granularity[0]",
        "G",
        "31337",
        "is not within 0..4",
        id="sweep-granularity",
    ),
    pytest.param(
        'modes: [caption, "${M}"]\n', 0, "modes[1]", "M", SECRET, "unknown mode", id="mode-list"
    ),
    pytest.param(
        "defaults:\n  entity_type: ${E}\n",
        1,
        "defaults.entity_type",
        "E",
        SECRET,
        "unknown entity_type",
        id="literal-choice",
    ),
    pytest.param(
        "retries:\n  max_attempts: ${A}\n",
        1,
        "retries.max_attempts",
        "A",
        SECRET,
        "a whole number",
        id="retries",
    ),
]


@pytest.mark.parametrize("extra, below, key, var, value, reason", INTERPOLATED_BAD)
def test_an_interpolated_value_is_named_not_shown(
    tmp_path: Path, extra: str, below: int, key: str, var: str, value: str, reason: str
) -> None:
    path = write(tmp_path, BASE + extra)
    with pytest.raises(SuiteError) as caught:
        load(path, **{var: value})
    message = str(caught.value)
    assert message.startswith(f"{path}:{AFTER_BASE + below}: {key}: "), message
    assert reason in message
    assert f"${{{var}}}" in message  # says where the value came from
    for part in (value, SECRET, "31337", "hunter2"):
        assert part not in message, message


@pytest.mark.parametrize(
    "text, key",
    [
        ("name: ${V}\nqueries: [a]\n", "name"),  # a validator that echoes with !r
        ("name: t\nx: &a ${V}\nrate_limit: *a\nqueries: [a]\n", "x"),  # the first error by line
        ("name: t\nqueries: [a]\nrate_limit: &a ${V}\nconcurrency: *a\n", "rate_limit"),
    ],
    ids=["name", "alias-unknown-key", "alias"],
)
def test_an_interpolated_value_is_not_shown_in_any_reason(
    tmp_path: Path, text: str, key: str
) -> None:
    with pytest.raises(SuiteError) as caught:
        load(write(tmp_path, text), V=f"bad name {SECRET}")
    assert f": {key}: " in str(caught.value)
    assert SECRET not in str(caught.value) and "hunter2" not in str(caught.value)


def test_an_alias_of_an_interpolated_value_is_named_too(tmp_path: Path) -> None:
    text = BASE + "description: &a ${V}\nrate_limit: *a\n"  # fine as a description
    with pytest.raises(SuiteError) as caught:
        load(write(tmp_path, text), V=SECRET)
    assert "rate_limit: the value of ${V} is not a rate" in str(caught.value)


def test_environment_text_in_a_derived_value_is_replaced_by_its_variable(tmp_path: Path) -> None:
    secret_dir = tmp_path / SECRET
    secret_dir.mkdir()
    path = write(tmp_path, BASE + "queries_file: ${DIR}/missing.tsv\n")
    with pytest.raises(SuiteError) as caught:
        load(path, DIR=str(secret_dir))
    assert ": queries_file: no such file: " in str(caught.value)
    assert SECRET not in str(caught.value) and "${DIR}" in str(caught.value)


@pytest.mark.parametrize(
    "extra, key",
    [
        ("dataset_id: d\nbase_url: ftp://user:s3cret@host/x\n", "base_url"),
        ("dataset_id: d\nbase_url: 'ftp://user:s3cret@host/x?y=1 and more'\n", "base_url"),
        (f"dataset_id: d\nbase_url: ftp://{'u' * 70}:s3cret@host/x\n", "base_url"),  # shortened
        ("dataset_id: d\nconcurrency: ftp://user:s3cret@host\n", "concurrency"),
    ],
    ids=["base-url", "base-url-quoted", "base-url-long", "wrong-type"],
)
def test_url_userinfo_is_never_shown(tmp_path: Path, extra: str, key: str) -> None:
    path = write(tmp_path, BASE + extra)
    with pytest.raises(SuiteError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}:{AFTER_BASE + 1}: {key}: "), str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_url_userinfo_is_masked_in_a_literal_name(tmp_path: Path) -> None:
    path = write(tmp_path, "name: https://user:s3cret@host\nqueries: [a]\n")
    with pytest.raises(SuiteError) as caught:
        load(path)
    assert str(caught.value) == (
        f"{path}:1: name: 'https://***@host' must be letters, digits, '.', '_' or '-' "
        "(it names a folder)"
    )


def test_a_literal_value_is_still_shown(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "rate_limit: hunter2\n")
    with pytest.raises(SuiteError) as caught:
        load(path)
    assert f"{path}:{AFTER_BASE}: rate_limit: 'hunter2' is not a rate" in str(caught.value)


def test_qrels_trailing_comment_accepted_and_unjudged_lines_skipped(tmp_path: Path) -> None:
    write(
        tmp_path,
        f"a 0 {MEDIA} 2  # file name | caption\na 0 x.jpg -1\na 0 y.jpg 0 # judged\n",
        "j.qrels",
    )
    suite = load(write(tmp_path, BASE + "judgments: {qrels: j.qrels}\n"))
    assert [(j.kind, j.value, j.grade) for j in suite.judgments_rows] == [
        ("media_id", MEDIA, 2),
        ("file_name", "y.jpg", 0),
    ]


def test_qrels_line_reader_is_shared_with_the_evaluation(tmp_path: Path) -> None:
    qrels = write(
        tmp_path, f"# todo\na 0 {MEDIA} 1\na 0 x.jpg -1  # not yet\na 0 y.jpg 3\n", "j.qrels"
    )
    suite = load(write(tmp_path, BASE + "judgments: {qrels: j.qrels}\n"))
    assert [(j.query_id, j.value, j.grade) for j in suite.judgments_rows] == (
        load_qrels(qrels).select("query_id", "value", "grade").rows()
    )


def test_qrels_bad_grade_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "a 0 x.jpg 1\n\na 0 y.jpg 1.5 # half\n", "j.qrels")
    with pytest.raises(SuiteError) as caught:
        load(write(tmp_path, BASE + "judgments: {qrels: j.qrels}\n"))
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(bad), 3, "grade")
    assert str(caught.value) == f"{bad}:3: grade: '1.5' is not a whole number"
