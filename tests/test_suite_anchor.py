"""Visual search in a suite: queries that give an anchor (a media id), modes `via: anchor`.

The suite refuses what cannot be asked (a query no mode sends, a mode with no query to send);
the demo's anchor queries and their judgments are what the checked-in generator writes; and a
run against the local server sends, pages, stores and evaluates them like any other mode.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from helpers_exec import request_rows, run_sync, write_suite

from runner.errors import SuiteError
from runner.evaluate import evaluate_run
from runner.plan import expand
from runner.server.lifecycle import ServerThread
from runner.store import scan_hits
from runner.suite import BUILTIN_MODES, Suite, load_suite, suite_hash

QUERIES_DIR = Path(__file__).resolve().parent.parent / "queries"
MEDIA = "2963ac44-2bb0-510a-b047-0920d1538884"  # demo image 30494 (a dog and a frisbee)
OTHER = "a0a6a1fd-7c70-56e9-be0d-cafeed7865f9"  # demo image 1818 (giraffes and zebras)
NOWHERE = "00000000-0000-5000-8000-000000000000"  # a media id no dataset holds


def load(tmp_path: Path, text: str) -> Suite:
    path = tmp_path / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    return load_suite(path, env={})


# --- the suite --------------------------------------------------------------------------------


def test_anchor_queries_and_the_visual_mode(tmp_path: Path) -> None:
    suite = load(
        tmp_path,
        "name: t\nmodes: [semantic, visual]\nqueries:\n"
        f"  - {{id: v, anchor: {MEDIA.upper()}}}\n"
        "  - {id: t, text: a dog}\n"
        f"  - {{id: both, text: a dog and a frisbee, anchor: {MEDIA}}}\n",
    )
    assert [(q.id, q.text, q.anchor) for q in suite.queries] == [
        ("v", None, MEDIA),  # media ids are compared lower-case
        ("t", "a dog", None),
        ("both", "a dog and a frisbee", MEDIA),
    ]
    assert suite.modes["visual"] == BUILTIN_MODES["visual"]
    assert (suite.modes["visual"].via, suite.modes["visual"].kind) == ("anchor", "anchor")


def test_a_suite_naming_no_modes_gets_visual_when_a_query_has_an_anchor(tmp_path: Path) -> None:
    plain = load(tmp_path, "name: t\nqueries: [a dog]\n")
    assert list(plain.modes) == ["caption", "fts", "semantic"]
    mixed = load(tmp_path, f"name: t\nqueries: [a dog, {{id: v, anchor: {MEDIA}}}]\n")
    assert list(mixed.modes) == ["caption", "fts", "semantic", "visual"]
    visual = load(tmp_path, f"name: t\nqueries: [{{id: v, anchor: {MEDIA}}}]\n")
    assert list(visual.modes) == ["visual"]


def test_a_mode_of_any_name_may_send_anchors(tmp_path: Path) -> None:
    suite = load(
        tmp_path,
        f"name: t\nmodes: {{like-this: {{via: anchor}}}}\nqueries: [{{id: v, anchor: {MEDIA}}}]\n",
    )
    assert suite.modes["like-this"].sends == "anchor"


BAD = [
    pytest.param(
        "modes: [visual]\nqueries:\n  - {id: v, anchor: not-a-uuid}\n",
        3,
        "queries[0].anchor",
        "'not-a-uuid' is not a media id",
        id="anchor-not-a-media-id",
    ),
    pytest.param(
        "queries:\n  - {id: v, labels: [dog]}\n",
        2,
        "queries[0].text",
        "is required (or an anchor",
        id="neither-text-nor-anchor",
    ),
    pytest.param(
        f"modes: [caption]\nqueries:\n  - a dog\n  - {{id: v, anchor: {MEDIA}}}\n",
        4,
        "queries[1].anchor",
        "query 'v' gives an anchor, but no mode sends one: add a mode with via: anchor",
        id="anchor-query-no-anchor-mode",
    ),
    pytest.param(
        f"modes: [visual]\nqueries:\n  - {{id: v, anchor: {MEDIA}}}\n  - a dog\n",
        4,
        "queries[1].text",
        "query 'q2' gives a text, but no mode sends one",
        id="text-query-only-visual",
    ),
    pytest.param(
        "modes: [caption, visual]\nqueries: [a dog]\n",
        1,
        "modes.visual",
        "no query gives an anchor (a media id) for this mode to send",
        id="visual-mode-no-anchor-query",
    ),
    pytest.param(
        f"modes: [fts, visual]\nqueries:\n  - {{id: v, anchor: {MEDIA}}}\n",
        1,
        "modes.fts",
        "no query gives a text for this mode to send",
        id="text-mode-no-text-query",
    ),
    pytest.param(
        f"modes:\n  v: {{via: anchor, op: semantic}}\nqueries: [{{id: v, anchor: {MEDIA}}}]\n",
        2,
        "modes.v.op",
        "via anchor takes no op",
        id="anchor-with-op",
    ),
    pytest.param(
        "modes:\n  v: {via: anchor}\n  w: {via: anchor}\n"
        f"queries: [{{id: v, anchor: {MEDIA}}}]\n",
        3,
        "modes.w",
        "sends the same requests as mode 'v'",
        id="two-anchor-modes",
    ),
]


@pytest.mark.parametrize("text, line, key, words", BAD)
def test_what_cannot_be_asked_is_refused_at_its_line(
    tmp_path: Path, text: str, line: int, key: str, words: str
) -> None:
    with pytest.raises(SuiteError) as caught:
        load(tmp_path, "name: t\n" + text)
    assert (caught.value.line, caught.value.key) == (line + 1, key)
    assert words in caught.value.reason


def test_file_query_no_mode_sends_is_refused_at_its_file_line(tmp_path: Path) -> None:
    data = tmp_path / "q.tsv"
    data.write_text(f"id\ttext\tanchor\nt\ta dog\t\nv\t\t{MEDIA}\n", encoding="utf-8")
    with pytest.raises(SuiteError) as caught:
        load(tmp_path, "name: t\nmodes: [caption]\nqueries_file: q.tsv\n")
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(data), 3, "anchor")


def test_bad_anchor_in_a_file_names_file_line_and_column(tmp_path: Path) -> None:
    data = tmp_path / "q.csv"
    data.write_text("id,anchor\nv,frisbee.jpg\n", encoding="utf-8")
    with pytest.raises(SuiteError) as caught:
        load(tmp_path, "name: t\nqueries_file: q.csv\n")
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(data), 2, "anchor")


def test_the_anchor_is_part_of_the_suite_hash(tmp_path: Path) -> None:
    one = load(tmp_path, f"name: t\nqueries: [{{id: v, anchor: {MEDIA}}}]\n")
    two = load(tmp_path, f"name: t\nqueries: [{{id: v, anchor: {OTHER}}}]\n")
    assert suite_hash(one) != suite_hash(two)


# --- the demo's visual queries ----------------------------------------------------------------


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_visual_qrels", QUERIES_DIR / "make_visual_qrels.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_visual_queries_and_judgments_are_what_the_generator_writes() -> None:
    make = generator()
    demo = load_suite(QUERIES_DIR / "demo.yaml", env={})
    anchors = [(q.id, q.anchor) for q in demo.queries if q.anchor]
    assert anchors == make.visual_queries()
    qrels = (QUERIES_DIR / "demo-visual.qrels").read_text(encoding="utf-8")
    assert qrels == make.qrels_text(make.visual_judgments())


def test_demo_visual_judgments_grade_by_shared_labels() -> None:
    from runner.server.demo import demo_images, labels_mentioned

    labels = {im.media_id: set(labels_mentioned(im.captions)) for im in demo_images()}
    rows = generator().visual_judgments()
    for qid, anchor in generator().visual_queries():
        mine = [(media, grade) for q, media, grade in rows if q == qid]
        assert (anchor, 0) in mine  # the anchor itself is no answer
        assert sum(grade == 2 for _, grade in mine) >= 3  # every anchor has real answers
        for media, grade in mine:
            if grade == 2:
                assert labels[media] == labels[anchor]
            elif grade == 1:
                shared, held = labels[media] & labels[anchor], labels[media] | labels[anchor]
                assert 2 * len(shared) >= len(held) and labels[media] != labels[anchor]


def test_demo_suite_plans_visual_requests_for_its_anchors_only() -> None:
    demo = load_suite(QUERIES_DIR / "demo.yaml", env={})
    visual = [spec for spec in expand(demo) if spec.mode == "visual"]
    assert {spec.query_id for spec in visual} == {q.id for q in demo.queries if q.anchor}
    assert all(spec.anchor_media_id and "anchor_media_id" in spec.params() for spec in visual)


# --- a run against the local server -----------------------------------------------------------


def test_visual_search_runs_pages_and_evaluates_like_any_mode(
    demo_server: ServerThread, tmp_path: Path
) -> None:
    """Needs the server's `anchor_media_id` (issue 9): ranked by similarity to the anchor."""
    qrels = tmp_path / "visual.qrels"
    shutil.copy(QUERIES_DIR / "demo-visual.qrels", qrels)
    queries = [
        {"id": "visual-30494", "anchor": MEDIA},
        {"id": "visual-1818", "anchor": OTHER},
        {"id": "nowhere", "anchor": NOWHERE},
        {"id": "dogs", "text": "a dog catching a frisbee"},
    ]
    suite = write_suite(
        tmp_path,
        demo_server,
        queries=queries,
        modes=["semantic", "visual"],
        sweep={"granularity": [0, 2]},
        pagination={"max_pages": 2},
        judgments={"qrels": str(qrels)},
    )
    result = run_sync(suite, tmp_path / "reports")
    assert result.status == "complete"
    requests = request_rows(result.run_dir)
    visual = requests.filter(pl.col("mode") == "visual")
    assert set(visual["setting"]) == {"default", "g=2"}  # swept like the others
    # An anchor the dataset does not hold fails alone, at once, naming it; the rest succeed.
    lost = visual.filter(pl.col("query_id") == "nowhere")
    assert lost["outcome"].to_list() == ["http_error"] * 2
    assert set(lost["http_status"]) <= {404, 422} and all(NOWHERE in e for e in lost["error"])
    found = requests.filter(pl.col("query_id") != "nowhere")
    assert (found["outcome"] == "ok").all()
    assert result.counts.requests_failed == 2
    # Ranked by similarity to the anchor: first comes the anchor itself (if the server returns
    # it) or an image that shares its labels.
    graded = pl.read_csv(qrels, separator=" ", has_header=False, new_columns=["q", "i", "m", "g"])
    hits = scan_hits(result.run_dir).filter(pl.col("mode") == "visual").collect()
    for qid, anchor in (("visual-30494", MEDIA), ("visual-1818", OTHER)):
        mine = hits.filter((pl.col("query_id") == qid) & (pl.col("setting") == "default"))
        first = mine.sort("rank")["media_id"][0]
        good = graded.filter((pl.col("q") == qid) & (pl.col("g") > 0))["m"].to_list()
        assert first == anchor or first in good
    # Evaluated like any mode: images sharing the anchor's labels come back near the top.
    per_query = evaluate_run(result.run_dir).per_query
    ndcg = per_query.filter(
        (pl.col("mode") == "visual")
        & (pl.col("measure") == "nDCG@10")
        & (pl.col("unit") == "media")
    )
    assert set(ndcg["setting"]) == {"default", "g=2"}
    giraffes = ndcg.filter((pl.col("query_id") == "visual-1818") & (pl.col("setting") == "default"))
    assert giraffes["value"][0] > 0
    # Better than chance: the top 10 carry a higher mean grade than the judged pool as a whole.
    pool = graded.filter(pl.col("q") == "visual-1818")
    grade_of = dict(zip(pool["m"], pool["g"], strict=True))
    top = hits.filter((pl.col("query_id") == "visual-1818") & (pl.col("setting") == "default"))
    top10 = top.sort("rank")["media_id"].head(10).to_list()
    top_mean = sum(grade_of.get(m, 0) for m in top10) / len(top10)
    n_images = 2537  # the demo dataset: ungraded images count 0
    assert top_mean > pool["g"].sum() / n_images
