"""Expansion of a suite into requests: counts, exact params, stable keys, dedup, shards, cost."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path

import orjson
import pytest

from runner.errors import UsageError
from runner.plan import (
    EMBEDDED_DATASET,
    Plan,
    RequestSpec,
    expand,
    parse_shard,
    shard,
    summarise,
)
from runner.server.query import DatasetInfo, TextQuery
from runner.server.vql import parse_explore
from runner.suite import Suite, load_suite
from runner.suite.fields import MAX_PAGES

QUERIES = [("dog", "a dog on a beach"), ("bus", "a red bus"), ("cat", "a cat on a sofa")]
TST = [0.3, 0.5, 0.7]
ST = [0.6, 0.8]


def suite_yaml(
    *,
    queries: list[tuple[str, str]] = QUERIES,
    tst: list[float] = TST,
    st: list[float] = ST,
    granularity: list[int] | None = None,
    extra: str = "",
) -> str:
    lines = [
        "name: plan-test",
        "dataset_id: ds1",
        "base_url: http://127.0.0.1:1",
        "rate_limit: 4/s",
        "pagination: {max_pages: 3}",
        f"sweep: {{textual_similarity_threshold: {tst}, semantic_threshold: {st}"
        + (f", granularity: {granularity}}}" if granularity is not None else "}"),
        "queries:",
        *(f"  - {{id: {qid}, text: {text}}}" for qid, text in queries),
    ]
    return "\n".join(lines) + "\n" + extra


def make(tmp_path: Path, text: str, name: str = "suite.yaml") -> Suite:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_suite(path, env={})


# --- expansion counts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tst, st, granularity",
    [
        pytest.param(TST, ST, None, id="full-sweep"),
        pytest.param([], [], None, id="no-sweep"),
        pytest.param(TST, [], [0, 2], id="caption-sweep-two-granularities"),
        pytest.param([0.5], ST, [1, 2, 4], id="three-granularities"),
    ],
)
def test_expansion_count_is_queries_times_grid(
    tmp_path: Path, tst: list[float], st: list[float], granularity: list[int] | None
) -> None:
    plan = expand(make(tmp_path, suite_yaml(tst=tst, st=st, granularity=granularity)))
    grid = (len(tst) or 1) + 1 + (len(st) or 1)  # caption + fts + semantic
    assert len(plan) == len(QUERIES) * grid * len(granularity or [0])
    assert len(plan.requests) == len(plan.specs)  # every query text differs
    assert len({spec.key for spec in plan}) == len(plan)


def test_expansion_with_a_subset_of_modes(tmp_path: Path) -> None:
    plan = expand(make(tmp_path, suite_yaml(extra="modes: [fts, semantic]\n")))
    assert len(plan) == len(QUERIES) * (1 + len(ST))
    assert {spec.mode for spec in plan} == {"fts", "semantic"}


def test_settings_and_cutoffs(tmp_path: Path) -> None:
    plan = expand(make(tmp_path, suite_yaml(granularity=[0, 2])))
    dog = [spec for spec in plan if spec.query_id == "dog"]
    assert [(s.mode, s.setting, s.cutoff, s.threshold) for s in dog] == [
        *(("caption", f"tst={t}" + (f" g={g}" if g else ""), t, g) for t in TST for g in (0, 2)),
        ("fts", "default", None, 0),
        ("fts", "g=2", None, 2),
        *(("semantic", f"st={t}" + (f" g={g}" if g else ""), t, g) for t in ST for g in (0, 2)),
    ]
    for spec in dog:
        assert spec.textual_similarity_threshold == (
            spec.cutoff if spec.mode == "caption" else None
        )
        assert spec.semantic_threshold == (spec.cutoff if spec.mode == "semantic" else None)


def test_empty_sweep_sends_no_cutoff(tmp_path: Path) -> None:
    plan = expand(make(tmp_path, suite_yaml(tst=[], st=[])))
    assert {spec.setting for spec in plan} == {"default"}
    for spec in plan:
        params = spec.params()
        assert "textual_similarity_threshold" not in params
        assert spec.cutoff is None
        if "vql" in params:
            assert "threshold" not in json.loads(params["vql"])[0]["text"]


# --- exact parameters -------------------------------------------------------------------------


def spec_of(plan: Plan, query_id: str, mode: str, setting: str) -> RequestSpec:
    (found,) = [s for s in plan if (s.query_id, s.mode, s.setting) == (query_id, mode, setting)]
    return found


def test_params_of_each_mode(tmp_path: Path) -> None:
    extra = "defaults: {entity_type: IMAGES, granularity: 3}\n"
    plan = expand(make(tmp_path, suite_yaml(extra=extra)))
    text = "a dog on a beach"
    assert spec_of(plan, "dog", "caption", "tst=0.5 g=3").params() == {
        "caption": text,
        "entity_type": "IMAGES",
        "threshold": "3",
        "textual_similarity_threshold": "0.5",
    }
    assert spec_of(plan, "dog", "fts", "g=3").params() == {
        "vql": '[{"text":{"op":"fts","value":"a dog on a beach"}}]',
        "entity_type": "IMAGES",
        "threshold": "3",
    }
    assert spec_of(plan, "dog", "semantic", "st=0.8 g=3").params() == {
        "vql": '[{"text":{"op":"semantic","value":"a dog on a beach","threshold":0.8}}]',
        "entity_type": "IMAGES",
        "threshold": "3",
    }


def test_params_with_a_labels_filter(tmp_path: Path) -> None:
    text = (
        suite_yaml(queries=[])
        + '  - {id: q, text: "a \\"red\\" car", labels: [vehicle, car, car]}\n'
    )
    plan = expand(make(tmp_path, text))
    caption = spec_of(plan, "q", "caption", "tst=0.3")
    assert caption.labels_filter == ("car", "vehicle")  # sorted, once each: a one-of set
    assert caption.params()["labels"] == '["car","vehicle"]'
    assert json.loads(spec_of(plan, "q", "semantic", "st=0.6").params()["vql"]) == [
        {"text": {"op": "semantic", "value": 'a "red" car', "threshold": 0.6}},
        {"labels": {"op": "one_of", "value": ["car", "vehicle"]}},
    ]
    assert json.loads(spec_of(plan, "q", "fts", "default").params()["vql"])[1] == {
        "labels": {"op": "one_of", "value": ["car", "vehicle"]}
    }


def test_the_local_server_reads_every_request_as_meant(tmp_path: Path) -> None:
    """The contract: the server's own parser turns each request into the search it stands for."""
    text = suite_yaml(queries=[], granularity=[0, 4]) + "  - {id: q, text: a dog, labels: [dog]}\n"
    info = DatasetInfo(
        id="ds1",
        display_name="test",
        n_images=1,
        enrichments=frozenset({"CAPTION_IMAGES", "IMAGE_TAGGING"}),
        created_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    )
    for spec in expand(make(tmp_path, text)):
        parsed = parse_explore(spec.params() | {"page_number": "1"}, info)
        op = "caption" if spec.via == "caption" else spec.op
        assert op is not None
        expected_cutoff = spec.cutoff if op != "fts" else None
        assert parsed.request.text == TextQuery(op, spec.query_text, expected_cutoff)
        assert parsed.request.granularity == spec.threshold
        assert parsed.request.labels_one_of == spec.labels_filter
        assert parsed.request.entity_type == spec.entity_type
        assert parsed.page_number == 1


def test_request_spec_is_frozen_and_slotted(tmp_path: Path) -> None:
    spec = expand(make(tmp_path, suite_yaml())).specs[0]
    assert not hasattr(spec, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.key = "x"  # type: ignore[misc]


# --- keys -------------------------------------------------------------------------------------


def keyed(plan: Plan) -> dict[tuple[str, str, str], tuple[str, str]]:
    return {(s.query_id, s.mode, s.setting): (s.key, s.wire_key) for s in plan}


def test_keys_are_stable_across_loads(tmp_path: Path) -> None:
    first = keyed(expand(make(tmp_path, suite_yaml(), "a.yaml")))
    assert first == keyed(expand(make(tmp_path, suite_yaml(), "b.yaml")))
    assert all(len(k) == 16 and len(w) == 16 for k, w in first.values())


def test_keys_read_back_from_the_plan_are_the_hashes_of_what_is_sent(tmp_path: Path) -> None:
    """The plan holds keys as numbers: read back, each is the hash it always was (leading zeros
    too), so that a run resumes across versions. Also holds for a shard's specs."""
    queries = [(f"q{i}", f"query number {i}") for i in range(40)]
    plan = expand(make(tmp_path, suite_yaml(queries=queries)))

    def digest(*parts: str) -> str:
        return hashlib.sha256("\0".join(("vlbench-plan-v1", *parts)).encode()).hexdigest()[:16]

    specs = [*plan.specs, *shard(plan, 2, 3).specs]
    assert any(spec.key.startswith("0") for spec in specs)
    for spec in specs:
        canonical = orjson.dumps(spec.params(), option=orjson.OPT_SORT_KEYS).decode()
        assert spec.wire_key == digest("ds1", canonical)
        assert spec.key == digest(spec.wire_key, spec.query_id)
    assert list(plan.specs) == list(plan.specs)  # built again on each read, equal each time


def test_keys_do_not_depend_on_yaml_order(tmp_path: Path) -> None:
    one = (
        "name: n\ndataset_id: ds1\n"
        "modes:\n  caption: {via: caption}\n  semantic: {via: vql, op: semantic}\n"
        "sweep: {semantic_threshold: [0.6, 0.8], textual_similarity_threshold: [0.5]}\n"
        "queries:\n  - {id: a, text: a dog, labels: [dog, animal]}\n  - {id: b, text: a cat}\n"
    )
    two = (
        "queries:\n  - {text: a cat, id: b}\n  - {labels: [animal, dog], text: a dog, id: a}\n"
        "sweep: {textual_similarity_threshold: [0.5], semantic_threshold: [0.8, 0.6]}\n"
        "modes:\n  semantic: {op: semantic, via: vql}\n  caption: {via: caption}\n"
        "concurrency: 2\nrate_limit: 1/s\ndataset_id: ds1\nname: renamed\n"
    )
    assert keyed(expand(make(tmp_path, one, "one.yaml"))) == keyed(
        expand(make(tmp_path, two, "two.yaml"))
    )


def test_keys_depend_on_dataset_query_id_and_parameters(tmp_path: Path) -> None:
    base = keyed(expand(make(tmp_path, suite_yaml(), "a.yaml")))
    other_dataset = keyed(expand(make(tmp_path, suite_yaml().replace("ds1", "ds2"), "b.yaml")))
    assert not set(base.values()) & set(other_dataset.values())
    renamed = keyed(
        expand(make(tmp_path, suite_yaml().replace("{id: dog", "{id: hound"), "c.yaml"))
    )
    for (qid, mode, setting), (key, wire_key) in base.items():
        new_key, new_wire_key = renamed[("hound" if qid == "dog" else qid, mode, setting)]
        assert new_wire_key == wire_key  # the same request on the wire ...
        assert (new_key == key) == (qid != "dog")  # ... answering another query id


def test_embedded_suite_keys_use_the_embedded_namespace(tmp_path: Path) -> None:
    plan = expand(make(tmp_path, "name: e\nqueries: [a dog]\n"))
    assert plan.dataset_id == EMBEDDED_DATASET


# --- dedup ------------------------------------------------------------------------------------


def test_identical_wire_requests_are_sent_once(tmp_path: Path) -> None:
    queries = [("a", "a dog"), ("b", "a dog"), ("c", "a cat")]
    text = suite_yaml(queries=queries) + "  - {id: d, text: a dog, labels: [dog]}\n"
    plan = expand(make(tmp_path, text))
    grid = len(TST) + 1 + len(ST)
    assert len(plan) == 4 * grid
    assert len(plan.requests) == 3 * grid  # a and b share every request; d's filter differs
    for request in plan.requests:
        assert {s.wire_key for s in request.specs} == {request.wire_key}
        assert len({s.key for s in request.specs}) == len(request.specs)
        assert all(s.params() == request.params() for s in request.specs)
    shared = [r for r in plan.requests if len(r.specs) > 1]
    assert len(shared) == grid and all(r.query_ids == ("a", "b") for r in shared)
    assert sum(len(r.specs) for r in plan.requests) == len(plan)
    summary = summarise(plan, make(tmp_path, text, "again.yaml"))
    assert (summary.n_specs, summary.n_requests, summary.n_shared) == (4 * grid, 3 * grid, grid)


# --- shards -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_are_disjoint_covering_and_deterministic(tmp_path: Path, n: int) -> None:
    queries = [(f"q{i}", f"query number {i}") for i in range(20)] + [("dup", "query number 3")]
    suite = make(tmp_path, suite_yaml(queries=queries))
    plan = expand(suite)
    shards = [shard(plan, k, n) for k in range(1, n + 1)]
    wire_keys = [{r.wire_key for r in s.requests} for s in shards]
    assert sum(len(keys) for keys in wire_keys) == len(plan.requests)
    assert set().union(*wire_keys) == {r.wire_key for r in plan.requests}
    assert sorted(spec.key for s in shards for spec in s) == sorted(spec.key for spec in plan)
    for part, keys in zip(shards, wire_keys, strict=True):
        assert {spec.wire_key for spec in part} == keys  # a request's specs stay together
    again = [
        shard(expand(make(tmp_path, suite_yaml(queries=queries), "b.yaml")), k, n)
        for k in range(1, n + 1)
    ]
    assert [s.specs for s in again] == [s.specs for s in shards]
    assert shards[0].shard_label == f"1/{n}"


@pytest.mark.parametrize("k, n", [(0, 3), (4, 3), (1, 0), (-1, 2)])
def test_shard_out_of_range_is_refused(tmp_path: Path, k: int, n: int) -> None:
    with pytest.raises(UsageError, match="shard"):
        shard(expand(make(tmp_path, suite_yaml())), k, n)


def test_a_shard_is_not_sharded_again(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="already shard 1/2"):
        shard(shard(expand(make(tmp_path, suite_yaml())), 1, 2), 1, 2)


@pytest.mark.parametrize(
    "text, expected",
    [pytest.param("2/4", (2, 4), id="plain"), pytest.param(" 1 / 1 ", (1, 1), id="spaces")],
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["2", "a/b", "0/4", "5/4", "1/0", "-1/2", ""])
def test_parse_shard_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_shard(text)


# --- summary ----------------------------------------------------------------------------------


def test_summary_counts_pages_and_duration(tmp_path: Path) -> None:
    suite = make(tmp_path, suite_yaml())
    plan = expand(suite)
    summary = summarise(plan, suite)
    grid = len(TST) + 1 + len(ST)
    requests = len(QUERIES) * grid
    assert (summary.n_queries, summary.n_modes, summary.n_requests) == (len(QUERIES), 3, requests)
    assert summary.max_pages_total == requests * 3
    assert summary.min_duration_s == pytest.approx(requests / 4)  # rate_limit: 4/s
    assert summary.max_duration_s == pytest.approx(requests * 3 / 4)
    assert [(c.mode, c.setting, c.requests) for c in summary.per_setting] == [
        *(("caption", f"tst={t}", len(QUERIES)) for t in TST),
        ("fts", "default", len(QUERIES)),
        *(("semantic", f"st={t}", len(QUERIES)) for t in ST),
    ]
    text = summary.render()
    assert f"{requests} unique" in text and f"at most {requests * 3}" in text
    assert orjson.loads(orjson.dumps(summary.to_dict()))["n_requests"] == requests


def test_summary_of_an_unlimited_rate(tmp_path: Path) -> None:
    suite = make(tmp_path, suite_yaml().replace("4/s", "unlimited"))
    summary = summarise(expand(suite), suite)
    assert summary.min_duration_s == 0 and summary.max_duration_s == 0
    assert "no rate limit" in summary.render()


def test_summary_of_all_pages_counts_the_client_cap(tmp_path: Path) -> None:
    """`all` pages until a short page, and never past the cap: the plan says what can happen."""
    suite = make(tmp_path, suite_yaml().replace("{max_pages: 3}", "{max_pages: all}"))
    plan = expand(suite)
    summary = summarise(plan, suite)
    assert summary.max_pages == "all"
    assert summary.max_pages_total == len(plan.requests) * MAX_PAGES
    assert summary.max_duration_s == pytest.approx(len(plan.requests) * MAX_PAGES / 4)
    assert f"{MAX_PAGES} a request at most" in summary.render()


def test_summary_of_a_shard(tmp_path: Path) -> None:
    suite = make(tmp_path, suite_yaml())
    part = shard(expand(suite), 2, 3)
    summary = summarise(part, suite)
    assert summary.shard == "2/3" and summary.n_requests == len(part.requests)
    assert sum(c.requests for c in summary.per_setting) == len(part.requests)
    # a shard k/N is paced at rate_limit / N, so that N shards at once keep to the limit
    assert summary.rate_limit == pytest.approx(suite.rate_limit / 3)
    assert summary.min_duration_s == pytest.approx(len(part.requests) / (suite.rate_limit / 3))
    assert "(shard 2/3)" in summary.render()


# --- visual search: anchor modes --------------------------------------------------------------

ANCHOR = "2963ac44-2bb0-510a-b047-0920d1538884"


def anchor_suite(tmp_path: Path, extra_queries: str = "", granularity: str = "[0, 2]") -> Suite:
    text = (
        "name: anchors\ndataset_id: ds1\nbase_url: http://127.0.0.1:1\n"
        f"modes: [caption, visual]\nsweep: {{textual_similarity_threshold: [0.4, 0.6], "
        f"granularity: {granularity}}}\nqueries:\n"
        "  - {id: t, text: a dog}\n"
        f"  - {{id: v, anchor: {ANCHOR}, labels: [dog, frisbee]}}\n"
        f"  - {{id: both, text: a dog with a frisbee, anchor: {ANCHOR}}}\n" + extra_queries
    )
    return make(tmp_path, text)


def test_an_anchor_mode_sends_anchor_media_id_and_no_text(tmp_path: Path) -> None:
    plan = expand(anchor_suite(tmp_path, granularity="[2]"))
    spec = next(s for s in plan if s.mode == "visual" and s.query_id == "v")
    assert spec.params() == {
        "entity_type": "IMAGES",
        "threshold": "2",
        "anchor_media_id": ANCHOR,
        "anchor_type": "MEDIA",
        "labels": '["dog","frisbee"]',
    }
    assert (spec.via, spec.op, spec.cutoff, spec.setting) == ("anchor", None, None, "g=2")
    assert (spec.anchor_media_id, spec.query_text) == (ANCHOR, f"anchor:{ANCHOR}")


def test_each_mode_asks_the_queries_that_give_what_it_sends(tmp_path: Path) -> None:
    plan = expand(anchor_suite(tmp_path))
    asked = {(s.mode, s.query_id) for s in plan}
    assert asked == {("caption", "t"), ("caption", "both"), ("visual", "v"), ("visual", "both")}
    # caption: 2 texts x 2 cut-offs x 2 granularities; visual: 2 anchors x 2 granularities.
    assert Counter(s.mode for s in plan) == {"caption": 8, "visual": 4}
    settings = {s.setting for s in plan if s.mode == "visual"}
    assert settings == {"default", "g=2"}  # swept over granularity, no cut-off


def test_the_same_anchor_is_one_wire_request_fanned_out(tmp_path: Path) -> None:
    extra = f"  - {{id: v2, anchor: {ANCHOR}, labels: [frisbee, dog]}}\n"
    plan = expand(anchor_suite(tmp_path, extra, granularity="[0]"))
    shared = [r for r in plan.requests if r.mode == "visual" and "v" in r.query_ids]
    assert len(shared) == 1 and shared[0].query_ids == ("v", "v2")
    # Without the labels filter the anchor is another request.
    both = [r for r in plan.requests if r.mode == "visual" and "both" in r.query_ids]
    assert len(both) == 1 and both[0].wire_key != shared[0].wire_key


def test_a_plan_summary_counts_anchor_requests(tmp_path: Path) -> None:
    suite = anchor_suite(tmp_path)
    summary = summarise(expand(suite), suite)
    visual = {c.setting: c.requests for c in summary.per_setting if c.mode == "visual"}
    assert visual == {"default": 2, "g=2": 2}
