"""The rows a unit's pages become: made at a flush from Arrow, checked against a plain reading.

The reference below walks `Page.clusters` (typed objects, read from the body again) hit by hit,
the way the schema documents each column; the recorder must give exactly those rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from helpers_exec import write_suite

from runner.api.client import parse_page
from runner.execute._rows import Fetched, Recorder
from runner.plan import RequestSpec, expand
from runner.schema import HITS_SCHEMA, REQUESTS_SCHEMA, normalise_score
from runner.store import RunCounts
from runner.suite import load_suite

SENT_AT = 1_700_000_000.25


class Capture:
    """A run sink that keeps what it is given."""

    run_dir = Path("unused")
    counts = RunCounts()

    def __init__(self) -> None:
        self.requests: list[pa.RecordBatch] = []
        self.hits: list[pa.RecordBatch] = []

    def completed_keys(self) -> set[str]:
        return set()

    def finish(self, status: str) -> None:
        return None

    def record(self, request_rows: pa.RecordBatch, hit_rows: pa.RecordBatch) -> None:
        self.requests.append(request_rows)
        self.hits.append(hit_rows)


def page_body(rng: random.Random, n_clusters: int) -> bytes:
    """A page mixing what the rows must handle: distances, types only on the cluster, a lone
    preview without labels (it takes its cluster's), previews without a score."""
    clusters = []
    for k in range(n_clusters):
        kind = rng.choice(["cosine_distance", "bm25"])
        previews = [
            {
                "media_id": f"m{k}-{j}-{rng.random():.6f}",
                "file_name": f"f{k}-{j}.jpg",
                "caption": rng.choice([None, f"caption {k} {j}"]),
                "relevance_score": rng.choice([None, rng.random(), rng.random()]),
                "relevance_score_type": rng.choice([None, kind]),
                "labels": rng.choice([None, ["dog"], ["cat", "person"]]),
                "media_thumb_uri": rng.choice([None, f"https://cdn.example.com/{k}/{j}.webp"]),
            }
            for j in range(rng.choice([1, 1, 2, 3]))
        ]
        clusters.append(
            {
                "cluster_id": f"c{k}-{rng.random():.6f}",
                "n_images": len(previews) + rng.randrange(5),
                "relevance_score": rng.random(),
                "relevance_score_type": kind,
                "labels": rng.choice([None, ["bus"], ["car", "truck"]]),
                "previews": previews,
            }
        )
    return orjson.dumps({"clusters": clusters})


def expected_hits(specs: tuple[RequestSpec, ...], pages: list[Fetched]) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        clusters_before = hits_before = 0
        for fetched in pages:
            if fetched.page is None:
                continue
            for k, cluster in enumerate(fetched.page.clusters):
                for j, preview in enumerate(cluster.previews):
                    hits_before += 1
                    kind = preview.relevance_score_type or cluster.relevance_score_type
                    labels = preview.labels
                    if labels is None and len(cluster.previews) == 1:
                        labels = cluster.labels
                    rows.append(
                        {
                            "request_key": spec.key,
                            "query_id": spec.query_id,
                            "page": fetched.page_number,
                            "cluster_rank": clusters_before + k + 1,
                            "cluster_id": cluster.cluster_id,
                            "cluster_size": cluster.n_images,
                            "cluster_score": cluster.relevance_score,
                            "preview_rank": j + 1,
                            "rank": hits_before,
                            "media_id": preview.media_id,
                            "file_name": preview.file_name,
                            "caption": preview.caption,
                            "raw_score": preview.relevance_score,
                            "score_type": kind,
                            "score": normalise_score(preview.relevance_score, kind),
                            "labels": None if labels is None else list(labels),
                            "media_thumb_uri": preview.media_thumb_uri,
                        }
                    )
            clusters_before += fetched.page.n_clusters
    return rows


@pytest.fixture
def specs(tmp_path: Path) -> list[tuple[RequestSpec, ...]]:
    queries = [{"id": f"q{i}", "text": f"query {i}"} for i in range(12)]
    plan = expand(
        load_suite(
            write_suite(tmp_path, None, base_url="http://x", dataset_id="ds", queries=queries)
        )
    )
    return [request.specs for request in plan.requests]


@pytest.mark.parametrize("max_units", [1, 5, 64])
def test_hit_rows_are_the_plain_reading_of_the_pages(
    specs: list[tuple[RequestSpec, ...]], max_units: int
) -> None:
    rng = random.Random(max_units)
    sink = Capture()
    recorder = Recorder(sink, max_units=max_units, max_wait_s=3600)
    expected: list[dict[str, Any]] = []
    request_rows = 0
    for i, unit in enumerate(specs):
        if i % 4 == 1:  # one wire request answering two query ids
            twin = dataclasses.replace(unit[0], key=unit[0].key + "-2", query_id="twin")
            unit = (unit[0], twin)
        n_pages = 1 + i % 3
        pages = [
            Fetched(
                n, parse_page(page_body(rng, rng.randrange(0, 7)), n), "ok", 200, 1, SENT_AT, 2.5
            )
            for n in range(n_pages)
        ]
        if i % 5 == 2:  # a page that failed for good ends the request
            pages.append(Fetched(n_pages, None, "timeout", None, 5, SENT_AT, 10.0, "timed out"))
        hits = recorder.add(unit, pages)
        if recorder.ready():
            recorder.flush()
        rows = expected_hits(unit, pages)
        assert hits == len(rows)
        expected += rows
        request_rows += len(unit) * len(pages)
    recorder.flush()

    got = pa.Table.from_batches(sink.hits, schema=HITS_SCHEMA)
    columns = list(expected[0])
    assert got.select(columns).to_pylist() == expected
    requests = pa.Table.from_batches(sink.requests, schema=REQUESTS_SCHEMA)
    assert requests.num_rows == request_rows  # one a page and spec
    assert set(requests.column("sent_at").to_pylist()) == {
        dt.datetime.fromtimestamp(SENT_AT, dt.UTC)
    }
    assert len(sink.hits) == -(-len(specs) // max_units)  # a flush every max_units units


def test_a_unit_without_hits_records_its_request_rows(specs: list[tuple[RequestSpec, ...]]) -> None:
    sink = Capture()
    recorder = Recorder(sink)
    empty = parse_page(orjson.dumps({"clusters": []}), 0)
    recorder.add(specs[0], [Fetched(0, empty, "ok", 200, 1, SENT_AT, 1.0)])
    recorder.add(specs[1], [Fetched(0, None, "http_error", 422, 1, SENT_AT, 1.0, "HTTP 422")])
    recorder.flush()
    (requests,), (hits,) = sink.requests, sink.hits
    assert requests.column("outcome").to_pylist() == ["ok", "http_error"]
    assert hits.num_rows == 0 and hits.schema.equals(HITS_SCHEMA)
