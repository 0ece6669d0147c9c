"""Runs on object storage: push to a local S3 server (moto), then export and history from s3://."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from moto.server import ThreadedMotoServer
from pyarrow.fs import FileSelector, S3FileSystem
from run_builder import build_run, hit
from test_history import OFFSETS, _night
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import RunError
from runner.evaluate.history import load_history
from runner.export.ids import export_run
from runner.store.location import resolve
from runner.store.push import push_run
from runner.store.reader import find_run_locations, read_manifest

BUCKET = "vlbench-test"
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, stopped after the module."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket and the environment that points vlbench at it; yields `s3://bucket/prefix`."""
    for key, value in {**ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    admin = S3FileSystem(
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        endpoint_override=s3_endpoint.removeprefix("http://"),
        scheme="http",
        allow_bucket_creation=True,
        allow_bucket_deletion=True,
    )
    admin.create_dir(BUCKET)
    yield f"s3://{BUCKET}/nightly"
    admin.delete_dir(BUCKET)


HITS = [
    hit("q1", "m1", raw_score=0.1),
    hit("q1", "m2", raw_score=0.3),
    hit("q2", "m2", raw_score=0.2),
    hit("q2", "m3", mode="fts", score_type="bm25", raw_score=3.0),
]


def _objects(root: str) -> list[str]:
    loc = resolve(root)
    infos = loc.fs.get_file_info(FileSelector(loc.path, recursive=True))
    return sorted(i.path[len(loc.path) + 1 :] for i in infos if i.is_file)


def test_push_keeps_the_hive_layout(s3: str, tmp_path: Path) -> None:
    run = build_run(tmp_path, hits=HITS)
    result = push_run(run, s3)
    rel = "suite=test/run_date=2024-01-01/run_id=test-run"
    assert result.uri == f"{s3}/{rel}"
    assert _objects(s3) == [f"{rel}/{name}" for name in sorted(p.name for p in run.iterdir())]
    assert result.files[-1] == "manifest.json"  # uploaded last
    assert result.bytes == sum(p.stat().st_size for p in run.iterdir())
    assert read_manifest(result.uri)["run_id"] == "test-run"
    assert [loc.uri for loc in find_run_locations(s3)] == [result.uri]


def test_push_refuses_a_second_push_and_a_running_run(s3: str, tmp_path: Path) -> None:
    run = build_run(tmp_path / "a", hits=HITS)
    push_run(run, s3)
    with pytest.raises(RunError, match="already there"):
        push_run(run, s3)
    push_run(run, s3, overwrite=True)
    running = build_run(tmp_path / "b", hits=HITS, run_id="busy", manifest={"status": "running"})
    with pytest.raises(RunError, match="still running"):
        push_run(running, s3)
    assert not any("busy" in o for o in _objects(s3))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_from_s3_equals_export_from_disk(s3: str, tmp_path: Path, fmt: str) -> None:
    run = build_run(tmp_path, hits=HITS)
    remote = push_run(run, s3).uri
    local_out, remote_out = tmp_path / f"local.{fmt}", tmp_path / f"remote.{fmt}"
    result = export_run(remote, remote_out, fmt=fmt, group_by="query", min_score=0.75)  # type: ignore[arg-type]
    export_run(run, local_out, fmt=fmt, group_by="query", min_score=0.75)  # type: ignore[arg-type]
    assert remote_out.read_bytes() == local_out.read_bytes()
    assert result.rows == 3  # m1 (0.9) for q1; m2 (0.8) and m3 (bm25 3.0) for q2; m2 of q1 is 0.7


def test_export_refuses_missing_and_corrupt_remote_runs(s3: str, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such run"):
        export_run(f"{s3}/suite=x/run_date=2024-01-01/run_id=none", tmp_path / "x.csv")
    run = build_run(tmp_path, hits=HITS)
    (run / "hits.parquet").write_bytes(b"PAR1 not parquet PAR1")
    remote = push_run(run, s3).uri
    with pytest.raises(RunError, match="corrupt Parquet"):
        export_run(remote, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_history_from_s3_equals_history_from_disk(s3: str, tmp_path: Path) -> None:
    for n, offset in enumerate(OFFSETS):
        push_run(_night(tmp_path, n, offset), s3)
    local = load_history(tmp_path / "suite=test")
    remote = load_history(s3, suite="test")
    assert remote.series.equals(local.series)
    assert remote.moved.select("mode", "run_id").rows() == [("semantic", "night-4")]


def test_cli_push_export_history_on_s3(s3: str, tmp_path: Path) -> None:
    cli = CliRunner()
    night = _night(tmp_path, 0, 0.0)
    result = cli.invoke(app, ["push", str(night), s3])
    assert result.exit_code == 0, result.output
    remote = f"{s3}/suite=test/run_date=2024-01-01/run_id=night-0"
    result = cli.invoke(app, ["export", remote])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["m1"]
    html = tmp_path / "h.html"
    result = cli.invoke(app, ["history", f"{s3}/suite=test", "--html", str(html)])
    assert result.exit_code == 0, result.output
    assert html.exists()
    assert "testing" not in result.output  # the credentials never show
    result = cli.invoke(app, ["push", str(tmp_path / "nope"), s3])
    assert result.exit_code == 2 and "no such run directory" in result.output
    assert pl.read_parquet(night / "metrics.parquet").height > 0
