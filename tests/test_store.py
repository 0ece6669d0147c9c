"""The run directory: layout, round trip of typed rows, manifest, finishing, readers, refusals."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.errors import RunError, WriteError
from runner.schema import (
    HITS_FILE,
    HITS_SCHEMA,
    JUDGMENTS_SCHEMA,
    MANIFEST_FILE,
    REQUESTS_FILE,
    REQUESTS_SCHEMA,
)
from runner.store import (
    RunWriter,
    _files,
    find_runs,
    latest_run,
    new_run_id,
    open_run,
    read_manifest,
    run_dir_for,
    scan_hits,
    scan_judgments,
    scan_requests,
)
from runner.store._manifest import write_manifest
from runner.store.synthetic import synthetic_unit

T0 = dt.datetime(2024, 11, 24, 6, 18, 0, tzinfo=dt.UTC)
MANIFEST_KEYS = {
    "run_id",
    "suite_name",
    "suite_hash",
    "tool_version",
    "base_url",
    "dataset_id",
    "started_at",
    "ended_at",
    "status",
    "counts",
    "modes",
    "sweep",
    "shard",
}


def new_writer(root: Path, **overrides: Any) -> RunWriter:
    args: dict[str, Any] = {
        "suite_name": "demo",
        "suite_hash": "sha256:abc",
        "base_url": "http://127.0.0.1:8000",
        "dataset_id": "ds-1",
        "tool_version": "0.1.0",
        "requests_planned": 10,
        "modes": {"captions": {"via": "caption"}},
        "sweep": {"textual_similarity_threshold": [0.5, 0.8]},
        "started_at": T0,
    }
    args.update(overrides)
    return RunWriter.create(root, **args)


def request_row(key: str, page: int = 0, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_key": key,
        "query_id": "q1",
        "query_text": "a red car",
        "mode": "captions",
        "setting": "tst=0.5",
        "entity_type": "IMAGES",
        "threshold": 2,
        "textual_similarity_threshold": 0.5,
        "semantic_threshold": None,
        "cutoff": 0.5,
        "labels_filter": ["car", "street"],
        "page": page,
        "outcome": "ok",
        "http_status": 200,
        "attempts": 2,
        "sent_at": T0 + dt.timedelta(seconds=page),
        "latency_ms": 12.25,
        "clusters": 1,
        "previews": 2,
        "error": None,
    }
    row.update(overrides)
    return row


def hit_row(key: str, rank: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_key": key,
        "query_id": "q1",
        "mode": "captions",
        "setting": "tst=0.5",
        "entity_type": "IMAGES",
        "threshold": 2,
        "textual_similarity_threshold": 0.5,
        "semantic_threshold": None,
        "cutoff": 0.5,
        "labels_filter": ["car", "street"],
        "page": 0,
        "cluster_rank": 1,
        "cluster_id": "cl-7",
        "cluster_size": 12,
        "cluster_score": 0.125,
        "preview_rank": rank,
        "rank": rank,
        "media_id": f"media-{key}-{rank}",
        "file_name": f"{rank}.jpg",
        "caption": "a red car on a street",
        "raw_score": 0.125 * rank,
        "score_type": "cosine_distance",
        "score": 1 - 0.125 * rank,
        "labels": ["car"],
        "media_thumb_uri": f"https://cdn.invalid/{key}/{rank}.webp",
    }
    row.update(overrides)
    return row


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[RunWriter]:
    w = new_writer(tmp_path)
    yield w
    w.close("partial")


def finished_run(root: Path, keys: int = 3, status: str = "complete", **overrides: Any) -> Path:
    w = new_writer(root, **overrides)
    for i in range(keys):
        w.record(*synthetic_unit(f"k{i}", hits_per_page=5))
    return w.finish(status).path


# -- layout ------------------------------------------------------------------------------------


def test_run_dir_is_hive_style_with_a_path_safe_suite_name(tmp_path: Path) -> None:
    path = run_dir_for(tmp_path, "Nightly / captions v2", dt.date(2024, 11, 24), "r1")
    assert path == tmp_path / "suite=Nightly-captions-v2" / "run_date=2024-11-24" / "run_id=r1"
    assert run_dir_for(tmp_path, "../..", "2024-11-24", "r1").parent.parent.name == "suite=suite"


@pytest.mark.parametrize(
    "run_id, run_date",
    [
        pytest.param("../x", "2024-11-24", id="dotdot-id"),
        pytest.param("a/b", "2024-11-24", id="slash-id"),
        pytest.param("r1", "24/11/2024", id="bad-date"),
    ],
)
def test_run_dir_refuses_unsafe_parts(tmp_path: Path, run_id: str, run_date: str) -> None:
    with pytest.raises(RunError):
        run_dir_for(tmp_path, "demo", run_date, run_id)


def test_new_run_ids_sort_by_start_time() -> None:
    times = [T0 + dt.timedelta(milliseconds=ms) for ms in (0, 1, 999, 1000, 86_400_000)]
    ids = [new_run_id(t) for t in times]
    assert sorted(ids) == ids
    assert len(set(new_run_id(T0) for _ in range(50))) == 50  # random suffix


def test_create_lays_out_the_run_and_refuses_an_existing_one(tmp_path: Path) -> None:
    w = new_writer(tmp_path, run_id="r1")
    assert w.run_dir == tmp_path / "suite=demo" / "run_date=2024-11-24" / "run_id=r1"
    with pytest.raises(RunError, match="exists already"):
        new_writer(tmp_path, run_id="r1")
    w.finish("complete")
    assert sorted(p.name for p in w.run_dir.iterdir()) == [
        HITS_FILE,
        "judgments.parquet",
        MANIFEST_FILE,
        REQUESTS_FILE,
    ]


def test_runs_read_as_one_hive_dataset(tmp_path: Path) -> None:
    a = finished_run(tmp_path, keys=2, run_id="ra")
    b = finished_run(tmp_path, keys=3, run_id="rb")
    frame = pl.scan_parquet(
        tmp_path / "suite=*" / "run_date=*" / "run_id=*" / HITS_FILE, hive_partitioning=True
    ).collect()
    per_run = dict(frame.group_by("run_id").len().iter_rows())
    assert per_run == {
        "ra": scan_hits(a).collect().height,
        "rb": scan_hits(b).collect().height,
    }
    assert set(frame["suite"]) == {"demo"}


# -- round trip --------------------------------------------------------------------------------


def test_rows_round_trip_with_the_schema_types(writer: RunWriter) -> None:
    requests = [request_row("k1", 0), request_row("k1", 1, previews=0, clusters=0)]
    hits = [hit_row("k1", 1), hit_row("k1", 2, labels=None, caption=None)]
    writer.record(requests, hits)
    run = writer.finish("complete").path
    assert pq.read_schema(run / REQUESTS_FILE).equals(REQUESTS_SCHEMA, check_metadata=False)
    assert pq.read_schema(run / HITS_FILE).equals(HITS_SCHEMA, check_metadata=False)
    assert scan_requests(run).collect().to_arrow().to_pylist() == requests
    assert scan_hits(run).collect().to_arrow().to_pylist() == hits


def test_arrow_tables_and_missing_nullable_columns_are_accepted(writer: RunWriter) -> None:
    requests, hits = synthetic_unit("k1", pages=2, hits_per_page=3)
    writer.record(requests.drop_columns(["error"]), hits.select(hits.column_names[::-1]))
    run = writer.finish("complete").path
    got = scan_requests(run).collect()
    assert got["error"].null_count() == requests.num_rows
    assert scan_hits(run).collect().to_arrow().to_pylist() == hits.to_pylist()


def test_hits_stay_in_rank_order_per_request(tmp_path: Path) -> None:
    w = new_writer(tmp_path, roll_rows=7)  # many parts: order must survive rolling
    for i in range(12):
        w.record(*synthetic_unit(f"k{i}", pages=2, hits_per_page=3 + i % 4))
    run = w.finish("complete").path
    hits = scan_hits(run).collect()
    for (key,), group in hits.group_by("request_key"):
        assert group["rank"].to_list() == list(range(1, group.height + 1)), key


@pytest.mark.parametrize(
    "requests, hits, message",
    [
        pytest.param([request_row("k", bogus=1)], [], "unknown column", id="unknown-column"),
        pytest.param(
            [request_row("k", mode=None)], [], "'mode' must not be null", id="null-required"
        ),
        pytest.param([request_row("k", attempts="two")], [], "do not fit", id="wrong-type"),
        pytest.param([], [], "at least one request row", id="empty-unit"),
        pytest.param([request_row("k")], [hit_row("other", 1)], "no request row", id="stray-hit"),
        pytest.param(
            [request_row("k")], [hit_row("k", 2), hit_row("k", 1)], "rank order", id="rank-order"
        ),
        pytest.param(
            [request_row("k"), request_row("j")],
            [hit_row("k", 2), hit_row("j", 1), hit_row("k", 1)],
            "request 'k', query 'q1' are not in rank order",
            id="rank-order-interleaved",
        ),
    ],
)
def test_record_refuses_bad_units(
    writer: RunWriter, requests: list[dict[str, Any]], hits: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(RunError, match=message):
        writer.record(requests, hits)
    assert writer.counts.requests_done == 0


def test_batches_of_the_exact_schema_are_still_checked(writer: RunWriter) -> None:
    # a batch already of the schema is taken as it is (no copy), but not on trust
    requests, hits = (t.to_batches()[0] for t in synthetic_unit("k", hits_per_page=3))

    def replaced(name: str, column: pa.Array) -> pa.RecordBatch:
        columns = [column if f.name == name else hits.column(f.name) for f in HITS_SCHEMA]
        return pa.RecordBatch.from_arrays(columns, schema=HITS_SCHEMA)

    with pytest.raises(RunError, match="'media_id' must not be null"):
        writer.record(requests, replaced("media_id", pa.nulls(hits.num_rows, pa.string())))
    with pytest.raises(RunError, match="no request row"):
        writer.record(requests, replaced("request_key", pa.array(["other"] * hits.num_rows)))
    writer.record(requests, hits)
    assert writer.counts.hits == 3


def test_record_refuses_a_key_twice_and_after_finish(writer: RunWriter) -> None:
    writer.record([request_row("k")], [hit_row("k", 1)])
    with pytest.raises(RunError, match="already recorded"):
        writer.record([request_row("k", page=1)], [])
    writer.finish("partial")
    with pytest.raises(RunError, match="finished"):
        writer.record([request_row("k2")], [])


def test_rank_order_is_checked_in_large_batches(writer: RunWriter) -> None:
    (req_a, hits_a), (req_b, hits_b) = (synthetic_unit(k, hits_per_page=700) for k in "ab")
    interleaved = pa.concat_tables([hits_a.slice(0, 350), hits_b, hits_a.slice(350)])
    swapped = pa.concat_tables([hits_a.slice(350), hits_b, hits_a.slice(0, 350)])
    both = pa.concat_tables([req_a, req_b])
    with pytest.raises(RunError, match="request 'a', query 'q1' are not in rank order"):
        writer.record(both, swapped)
    writer.record(both, interleaved)  # each request's hits still in rank order
    assert writer.counts.hits == 2 * 700


def test_a_unit_may_hold_several_request_keys(writer: RunWriter) -> None:
    writer.record(
        [request_row("k1"), request_row("k2", query_id="q2")],
        [hit_row("k1", 1), hit_row("k2", 1, query_id="q2"), hit_row("k1", 2)],
    )
    assert writer.completed_keys() == {"k1", "k2"}
    assert writer.counts.requests_done == 2


# -- manifest ----------------------------------------------------------------------------------


def test_manifest_says_running_then_the_final_counts(tmp_path: Path) -> None:
    w = new_writer(tmp_path, base_url="https://user:s3cret@api.example/v1?token=abc#x", shard="1/2")
    started = read_manifest(w.run_dir)
    assert MANIFEST_KEYS <= started.keys()
    assert started["status"] == "running" and started["ended_at"] is None
    assert started["base_url"] == "https://api.example/v1"
    assert "s3cret" not in (w.run_dir / MANIFEST_FILE).read_text()
    w.record(*synthetic_unit("a", pages=3, hits_per_page=4))
    w.record(*synthetic_unit("b", pages=2, hits_per_page=5, outcome="timeout"))
    info = w.finish("complete")
    assert info.status == "complete" and info.ended_at is not None and info.shard == "1/2"
    assert info.counts.requests_planned == 10
    assert info.counts.requests_done == 2
    assert info.counts.requests_failed == 1
    assert info.counts.pages == 3 + 2
    assert info.counts.hits == 3 * 4 + (2 - 1) * 5  # the failed last page has no hits
    assert info.counts.hits == scan_hits(info.path).collect().height
    assert info.counts.pages == scan_requests(info.path).collect().height


def test_manifest_must_be_json_able(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="JSON-able"):
        new_writer(tmp_path, modes={"x": object()})
    assert not list(tmp_path.rglob(MANIFEST_FILE))


@pytest.mark.parametrize("dies_in", ["fsync", "replace"])
def test_manifest_is_replaced_atomically(
    writer: RunWriter, monkeypatch: pytest.MonkeyPatch, dies_in: str
) -> None:
    before = (writer.run_dir / MANIFEST_FILE).read_bytes()

    def dying(*args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, dies_in, dying)
    with pytest.raises(WriteError, match="disk gone"):
        write_manifest(writer.run_dir, dict(read_manifest(writer.run_dir), status="complete"))
    monkeypatch.undo()
    assert (writer.run_dir / MANIFEST_FILE).read_bytes() == before
    assert read_manifest(writer.run_dir)["status"] == "running"
    assert not [p for p in writer.run_dir.iterdir() if ".tmp-" in p.name]


# -- finishing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["complete", "partial", "failed"])
def test_finish_leaves_valid_parquet_and_no_scratch(tmp_path: Path, status: str) -> None:
    run = finished_run(tmp_path, keys=4, status=status, roll_rows=10)
    assert read_manifest(run)["status"] == status
    assert {p.name for p in run.iterdir()} == {
        HITS_FILE,
        "judgments.parquet",
        MANIFEST_FILE,
        REQUESTS_FILE,
    }
    assert scan_requests(run).collect()["request_key"].n_unique() == 4


def test_finish_refuses_an_unknown_status(writer: RunWriter) -> None:
    with pytest.raises(RunError, match="not one of"):
        writer.finish("done")


def test_a_writer_left_unfinished_is_finished_partial(tmp_path: Path) -> None:
    with new_writer(tmp_path) as w:
        w.record(*synthetic_unit("k"))
    assert open_run(w.run_dir).status == "partial"
    assert scan_hits(w.run_dir).collect().height == synthetic_unit("k")[1].num_rows


@pytest.mark.parametrize(
    "exc, status",
    [
        pytest.param(KeyboardInterrupt, "partial", id="ctrl-c"),
        pytest.param(ValueError, "failed", id="error"),
    ],
)
def test_a_writer_left_by_an_exception_is_finished(
    tmp_path: Path, exc: type[BaseException], status: str
) -> None:
    with pytest.raises(exc), new_writer(tmp_path) as w:
        w.record(*synthetic_unit("k"))
        raise exc()
    assert open_run(w.run_dir).status == status
    assert scan_hits(w.run_dir).collect().height == synthetic_unit("k")[1].num_rows


def test_judgments_are_copied_into_the_run(tmp_path: Path) -> None:
    judgments = pa.Table.from_pylist(
        [
            {"query_id": "q1", "kind": "media_id", "value": "m1", "grade": 2, "source": "a.qrels"},
            {"query_id": "q1", "kind": "label", "value": "car", "grade": 1, "source": "by_labels"},
        ],
        schema=JUDGMENTS_SCHEMA,
    )
    run = new_writer(tmp_path, judgments=judgments).finish("complete").path
    assert scan_judgments(run).collect().to_arrow().to_pylist() == judgments.to_pylist()
    empty = new_writer(tmp_path, run_id="none").finish("complete").path
    assert scan_judgments(empty).collect().height == 0


# -- memory ------------------------------------------------------------------------------------


def test_writer_buffer_stays_bounded_over_200k_hits(tmp_path: Path) -> None:
    roll_rows = 20_000
    w = new_writer(tmp_path, roll_rows=roll_rows)
    template_requests, template_hits = synthetic_unit("t", pages=2, hits_per_page=100)
    units = 1_000
    peak = 0
    for i in range(units):
        key = pa.array([f"k{i}"] * template_hits.num_rows)
        w.record(
            template_requests.set_column(0, "request_key", pa.array([f"k{i}"] * 2)),
            template_hits.set_column(0, "request_key", key),
        )
        peak = max(peak, w.buffered_rows)
    unit_rows = template_requests.num_rows + template_hits.num_rows
    assert peak < roll_rows  # rolled to Parquet as soon as it reaches roll_rows
    assert peak >= roll_rows - unit_rows  # ... and not before
    info = w.finish("complete")
    assert info.counts.hits == units * template_hits.num_rows == 200_000
    assert pq.ParquetFile(info.hits_path).num_row_groups >= 200_000 // roll_rows


# -- readers -----------------------------------------------------------------------------------


def test_open_run_gives_the_manifest_facts(tmp_path: Path) -> None:
    run = finished_run(tmp_path, keys=2, run_id="r1")
    info = open_run(run)
    assert (info.run_id, info.suite_name, info.suite_hash, info.status) == (
        "r1",
        "demo",
        "sha256:abc",
        "complete",
    )
    assert open_run(run / MANIFEST_FILE) == info
    assert info.hits_path == run / HITS_FILE


def test_readers_refuse_a_running_run_unless_asked(writer: RunWriter) -> None:
    for reader in (open_run, scan_hits, scan_requests, scan_judgments):
        with pytest.raises(RunError, match="still running"):
            reader(writer.run_dir)
    assert scan_hits(writer.run_dir, allow_running=True).collect().height == 0


def test_a_running_run_shows_the_rows_rolled_so_far(tmp_path: Path) -> None:
    w = new_writer(tmp_path, roll_rows=20)
    hits_per_unit = 5
    for i in range(10):
        w.record(*synthetic_unit(f"k{i}", hits_per_page=hits_per_unit))
    got = scan_hits(w.run_dir, allow_running=True).collect()
    buffered_units = w.buffered_rows // (1 + hits_per_unit)
    assert 0 < got.height == w.counts.hits - buffered_units * hits_per_unit
    w.finish("complete")


@pytest.mark.parametrize(
    "damage, message",
    [
        pytest.param(lambda run: None, "no such run directory", id="missing-dir"),
        pytest.param(lambda run: run.mkdir(parents=True), "not a run directory", id="no-manifest"),
        pytest.param(
            lambda run: (run.mkdir(parents=True), (run / MANIFEST_FILE).write_text("{oops")),
            "corrupt manifest",
            id="bad-json",
        ),
        pytest.param(
            lambda run: (run.mkdir(parents=True), (run / MANIFEST_FILE).write_text('{"a": 1}')),
            "missing run_id",
            id="missing-keys",
        ),
    ],
)
def test_readers_refuse_what_is_not_a_run(tmp_path: Path, damage: Any, message: str) -> None:
    run = tmp_path / "suite=x" / "run_date=2024-01-01" / "run_id=r"
    damage(run)
    for reader in (read_manifest, open_run, scan_hits, scan_requests, scan_judgments):
        with pytest.raises(RunError, match=message) as caught:
            reader(run)
        assert str(run) in str(caught.value)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"not parquet at all"), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-20]), id="truncated"),
        pytest.param(lambda p: p.unlink(), id="missing"),
    ],
)
def test_readers_refuse_corrupt_parquet_naming_it(tmp_path: Path, damage: Any) -> None:
    run = finished_run(tmp_path)
    damage(run / HITS_FILE)
    with pytest.raises(RunError) as caught:
        scan_hits(run)
    assert str(run / HITS_FILE) in str(caught.value)
    assert scan_requests(run).collect().height > 0  # the other files still read


def test_readers_refuse_parquet_with_other_columns(tmp_path: Path) -> None:
    run = finished_run(tmp_path)
    pq.write_table(pa.table({"request_key": ["k"]}), run / HITS_FILE)
    with pytest.raises(RunError, match="differ from runner/schema.py"):
        scan_hits(run)


def test_find_runs_lists_runs_oldest_first(tmp_path: Path) -> None:
    day = dt.timedelta(days=1)
    old = finished_run(tmp_path, run_id=new_run_id(T0), started_at=T0)
    new = finished_run(tmp_path, run_id=new_run_id(T0 + day), started_at=T0 + day)
    newer = finished_run(tmp_path, status="partial", started_at=T0 + day + day)
    other = finished_run(tmp_path, suite_name="other suite")
    (tmp_path / "suite=demo" / "run_date=2024-11-24" / "run_id=empty").mkdir()  # no manifest
    assert find_runs(tmp_path, "demo") == [old, new, newer]
    assert set(find_runs(tmp_path)) == {old, new, newer, other}
    assert find_runs(tmp_path / "suite=demo") == [old, new, newer]
    assert latest_run(tmp_path, "demo") == new  # newest complete
    assert latest_run(tmp_path, "demo", status=None) == newer
    assert latest_run(tmp_path, "other suite") == other
    with pytest.raises(RunError, match="no failed run of suite 'demo'"):
        latest_run(tmp_path, "demo", status="failed")
    with pytest.raises(RunError, match="no such directory"):
        find_runs(tmp_path / "nowhere")


def test_a_running_run_is_invisible_to_hive_globs(tmp_path: Path) -> None:
    w = new_writer(tmp_path, roll_rows=5)
    for i in range(3):
        w.record(*synthetic_unit(f"k{i}"))
    assert {p.name for p in w.run_dir.iterdir()} == {
        MANIFEST_FILE,
        "judgments.parquet",
        "_journal",
        "_parts",
    }
    assert any((w.run_dir / "_parts").iterdir())
    assert not list(tmp_path.glob(f"suite=*/run_date=*/run_id=*/{HITS_FILE}"))
    w.finish("complete")
    assert len(list(tmp_path.glob(f"suite=*/run_date=*/run_id=*/{HITS_FILE}"))) == 1


def test_a_failed_finish_leaves_no_temp_file_and_can_be_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = new_writer(tmp_path, roll_rows=10)
    for i in range(5):
        w.record(*synthetic_unit(f"k{i}"))
    real_fsync_file = _files.fsync_file

    def full_disk(path: Path) -> None:
        if path.name.startswith(f".{HITS_FILE}.tmp-"):
            raise OSError("no space left on device")
        real_fsync_file(path)

    monkeypatch.setattr(_files, "fsync_file", full_disk)
    with pytest.raises(WriteError, match=r": cannot write: no space left"):
        w.finish("complete")
    monkeypatch.undo()
    assert not [p for p in w.run_dir.rglob("*") if ".tmp-" in p.name]
    assert read_manifest(w.run_dir)["status"] == "running"
    info = w.finish("complete")
    assert info.counts.requests_done == 5
    assert scan_requests(info.path).collect()["request_key"].n_unique() == 5
