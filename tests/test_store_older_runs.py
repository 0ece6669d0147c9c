"""Runs written before `media_thumb_uri` existed stay readable, resumable and mergeable.

An older run is made here as the older version wrote it: the same rows with the hits' optional
columns left out of its Parquet files (and of its journal frames, for a run that died).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.errors import RunError
from runner.evaluate import evaluate_run
from runner.judge.session import open_session
from runner.schema import HITS_FILE, HITS_SCHEMA, OPTIONAL_COLUMNS, conform, missing_columns
from runner.store import RunWriter, check_parquet, scan_hits, scan_requests
from runner.store._journal import Unit, encode_unit, read_segment
from runner.store._layout import JOURNAL_DIR
from runner.store.merge import merge_runs
from runner.store.synthetic import synthetic_unit

SUITE_HASH = "sha256:older"
OLDER_HITS = pa.schema([f for f in HITS_SCHEMA if f.name not in OPTIONAL_COLUMNS])


def unit(i: int) -> tuple[pa.Table, pa.Table]:
    return synthetic_unit(f"k{i:04d}", query_id=f"q{i % 3}", pages=1 + i % 2, hits_per_page=4)


def create(root: Path, **overrides: Any) -> RunWriter:
    args: dict[str, Any] = {
        "suite_name": "demo",
        "suite_hash": SUITE_HASH,
        "base_url": "http://127.0.0.1:8000",
        "dataset_id": "ds",
        "tool_version": "0.1.0",
        "requests_planned": 20,
    }
    args.update(overrides)
    return RunWriter.create(root, **args)


def older(table: pa.Table) -> pa.Table:
    """Hit rows as the older version wrote them: no optional columns."""
    return table.select(OLDER_HITS.names)


def older_run(root: Path, units: range, status: str = "complete", **overrides: Any) -> Path:
    """A finished run whose hits.parquet has the older columns."""
    writer = create(root, **overrides)
    for i in units:
        writer.record(*unit(i))
    run = writer.finish(status).path
    pq.write_table(older(pq.read_table(run / HITS_FILE)), run / HITS_FILE)
    assert pq.read_schema(run / HITS_FILE).names == OLDER_HITS.names
    return run


def test_the_optional_column_is_the_thumbnail() -> None:
    assert OPTIONAL_COLUMNS == {"media_thumb_uri"}
    assert HITS_SCHEMA.names[-1] == "media_thumb_uri"
    assert HITS_SCHEMA.field("media_thumb_uri").nullable


def test_an_older_run_reads_with_the_column_as_nulls(tmp_path: Path) -> None:
    run = older_run(tmp_path, range(6))
    assert check_parquet(run / HITS_FILE, HITS_SCHEMA) == ["media_thumb_uri"]
    hits = scan_hits(run).collect()
    assert hits.columns == HITS_SCHEMA.names
    assert hits["media_thumb_uri"].dtype == pl.String
    assert hits["media_thumb_uri"].null_count() == hits.height > 0
    expected = pl.from_arrow(pa.concat_tables([older(unit(i)[1]) for i in range(6)]))
    assert isinstance(expected, pl.DataFrame)
    assert (
        hits.drop("media_thumb_uri")
        .sort("request_key", "rank")
        .equals(expected.sort("request_key", "rank"))
    )
    assert evaluate_run(run).summary is not None  # the evaluation reads it as before


def test_a_wrong_type_or_a_missing_required_column_is_still_refused(tmp_path: Path) -> None:
    run = older_run(tmp_path, range(2))
    table = pq.read_table(run / HITS_FILE)
    thumbs = pa.array([1] * table.num_rows, pa.int64())
    pq.write_table(table.append_column("media_thumb_uri", thumbs), run / HITS_FILE)
    with pytest.raises(RunError, match=r"columns \['media_thumb_uri'\] are missing or differ"):
        scan_hits(run)
    pq.write_table(table.drop_columns(["caption"]), run / HITS_FILE)
    with pytest.raises(RunError, match=r"columns \['caption'\] are missing or differ"):
        scan_hits(run)


def test_an_older_partial_run_resumes_into_todays_schema(tmp_path: Path) -> None:
    run = older_run(tmp_path, range(5), status="partial")
    again = RunWriter.resume(run, suite_hash=SUITE_HASH, roll_rows=8)
    assert len(again.completed_keys()) == 5
    # While running: the older base file and the new parts read as one frame.
    for i in range(5, 12):
        again.record(*unit(i))
    live = scan_hits(run, allow_running=True).collect()
    assert live.columns == HITS_SCHEMA.names
    again.finish("complete")
    assert pq.read_schema(run / HITS_FILE).equals(HITS_SCHEMA, check_metadata=False)
    hits = scan_hits(run).collect()
    old = hits.filter(pl.col("request_key") < "k0005")
    new = hits.filter(pl.col("request_key") >= "k0005")
    assert old.height and old["media_thumb_uri"].null_count() == old.height
    assert new.height and new["media_thumb_uri"].null_count() == 0
    assert scan_requests(run).collect()["request_key"].n_unique() == 12


def test_an_older_runs_journal_is_replayed_not_dropped(tmp_path: Path) -> None:
    writer = create(tmp_path)
    for i in range(4):
        writer.record(*unit(i))
    run = writer.run_dir
    writer._release()  # the older process dies: its units are in the journal only
    (segment,) = (run / JOURNAL_DIR).glob("*.vlj")
    frames = [u for _, u in read_segment(segment)]
    assert len(frames) == 4
    segment.write_bytes(
        b"".join(encode_unit(Unit(u.requests, older_batch(u.hits))) for u in frames)
    )
    again = RunWriter.resume(run, suite_hash=SUITE_HASH)
    assert len(again.completed_keys()) == 4  # read, not taken for a torn tail
    again.record(*unit(4))
    again.finish("complete")
    hits = scan_hits(run).collect()
    assert hits["request_key"].n_unique() == 5
    assert hits.filter(pl.col("request_key") != "k0004")["media_thumb_uri"].null_count() == (
        hits.height - unit(4)[1].num_rows
    )


def older_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch.select(OLDER_HITS.names)


def test_older_and_newer_shards_merge(tmp_path: Path) -> None:
    a = older_run(tmp_path / "a", range(0, 6, 2), run_id="ra", shard="1/2")
    writer = create(tmp_path / "b", run_id="rb", shard="2/2")
    for i in range(1, 6, 2):
        writer.record(*unit(i))
    b = writer.finish("complete").path
    merged = merge_runs([a, b], tmp_path / "out").run_dir
    hits = scan_hits(merged).collect()
    assert pq.read_schema(merged / HITS_FILE).equals(HITS_SCHEMA, check_metadata=False)
    odd = hits.filter(pl.col("request_key").is_in([f"k{i:04d}" for i in (1, 3, 5)]))
    assert odd["media_thumb_uri"].null_count() == 0
    assert hits.filter(~pl.col("request_key").is_in(odd["request_key"]))[
        "media_thumb_uri"
    ].null_count() == (hits.height - odd.height)


def test_conform_and_missing_columns() -> None:
    _, hits = unit(1)
    assert missing_columns(older(hits).schema, HITS_SCHEMA) == ([], ["media_thumb_uri"])
    assert conform(older(hits), HITS_SCHEMA).equals(
        hits.set_column(
            hits.schema.get_field_index("media_thumb_uri"),
            "media_thumb_uri",
            pa.nulls(hits.num_rows, pa.string()),
        )
    )
    batch = older_batch(hits.to_batches()[0])
    assert conform(batch, HITS_SCHEMA).schema.equals(HITS_SCHEMA)


def test_the_judging_page_opens_an_older_run_without_thumbnails(tmp_path: Path) -> None:
    run = older_run(tmp_path, range(3))
    session = open_session(run, rater="ana", k=3)
    assert session.items and all(item.thumb is None for item in session.items)
    newer = create(tmp_path / "newer")
    newer.record(*unit(0))
    items = open_session(newer.finish("complete").path, rater="ana", k=3).items
    assert items and all(str(item.thumb).startswith("https://cdn.invalid/") for item in items)
