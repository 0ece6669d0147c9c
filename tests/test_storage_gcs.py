"""Runs on `gs://`: the object-storage tests of `test_storage.py`, against a fake GCS server.

The fake (`gcs_fake.py`) serves the JSON API on 127.0.0.1 from a child process, and
`STORAGE_EMULATOR_HOST` points pyarrow's `GcsFileSystem` at it (anonymous, plain HTTP). Every
`test_*` of `test_storage` runs here too, with this module's `bucket` fixture: the same push,
export, history, report, compare, judge-todo, merge and copy checks, on gs://. The tests written
here are what GCS needs beyond them: names with `=` kept exactly, listings that span pages, a
missing bucket, the atomic write's temp object.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import test_storage
from gcs_fake import create_bucket, fake_gcs_process
from run_builder import build_run, hit
from test_history import OFFSETS, _night
from test_storage import HITS, _objects

from runner.evaluate.history import load_history
from runner.store import scan_hits
from runner.store.atomic import atomic_write, atomic_write_bytes
from runner.store.location import resolve
from runner.store.push import push_run
from runner.store.reader import find_run_locations, read_manifest

# The tests of test_storage.py, collected again in this module, where `bucket` is on gs://.
globals().update(
    {
        k: v
        for k, v in vars(test_storage).items()
        if k.startswith("test_") and getattr(v, "__module__", "") == test_storage.__name__
    }
)


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    """The fake GCS server on a free loopback port (3 entries a list page), stopped after."""
    with fake_gcs_process(page_size=3) as endpoint:
        yield endpoint


@pytest.fixture
def bucket(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket and the environment that points vlbench at it; `gs://bucket/nightly`."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    name = f"vlbench-{secrets.token_hex(4)}"
    create_bucket(gcs_endpoint, name)
    return f"gs://{name}/nightly"


def test_hive_names_are_kept_exactly_and_listing_follows_pages(bucket: str, tmp_path: Path) -> None:
    for n, offset in enumerate(OFFSETS):  # 5 nights of 5 files: 9 list pages of 3
        push_run(_night(tmp_path, n, offset), bucket)
    local = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert _objects(bucket) == local and len(local) == 25
    found = [loc.uri for loc in find_run_locations(bucket)]
    assert found == [
        f"{bucket}/suite=test/run_date=2024-01-0{n + 1}/run_id=night-{n}" for n in range(5)
    ]
    assert [read_manifest(uri)["run_id"] for uri in found] == [f"night-{n}" for n in range(5)]
    assert len(load_history(bucket, suite="test").series) > 0


def test_a_parquet_file_read_in_ranges_equals_the_local_file(bucket: str, tmp_path: Path) -> None:
    many = [hit(f"q{i % 40}", f"m{i}", raw_score=i / 5000) for i in range(5000)]
    run = build_run(tmp_path, hits=many)
    pq.write_table(pq.read_table(run / "hits.parquet"), run / "hits.parquet", row_group_size=500)
    remote = push_run(run, bucket).uri
    assert pq.ParquetFile(run / "hits.parquet").num_row_groups == 10
    assert scan_hits(remote).collect().equals(scan_hits(run).collect())
    loc = resolve(remote).child("hits.parquet")
    with loc.fs.open_input_file(loc.path) as remote_file:
        assert remote_file.read_at(100, 1000) == (run / "hits.parquet").read_bytes()[1000:1100]


def test_the_atomic_write_leaves_the_old_object_or_the_new_one(bucket: str) -> None:
    target = resolve(bucket).child("suite=x/notes.bin")
    atomic_write_bytes(target, b"old")
    with pytest.raises(ZeroDivisionError), atomic_write(target) as out:
        out.write(b"half of the new")
        _ = 1 / 0
    assert target.read_bytes() == b"old"
    assert _objects(bucket) == ["suite=x/notes.bin"]  # the temp object is gone
    big = os.urandom(9 * 1024 * 1024)  # past the client's 8 MiB buffer: a chunked upload
    atomic_write_bytes(target, big)
    assert target.read_bytes() == big and _objects(bucket) == ["suite=x/notes.bin"]


def test_an_emulator_host_without_a_scheme_is_plain_http(
    bucket: str, gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint.removeprefix("http://"))
    remote = push_run(build_run(tmp_path, hits=HITS), bucket).uri
    assert read_manifest(remote)["run_id"] == "test-run"


def test_push_works_with_a_key_that_may_not_read_the_bucket_itself(
    gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    name = f"objects-only-{secrets.token_hex(4)}"
    create_bucket(gcs_endpoint, name, objects_only=True)  # bucket metadata: 403
    remote = push_run(build_run(tmp_path, hits=HITS), f"gs://{name}/nightly").uri
    assert read_manifest(remote)["run_id"] == "test-run"
    assert [loc.uri for loc in find_run_locations(f"gs://{name}/nightly")] == [remote]
