"""Runs on object storage: push to a local S3 server (moto), then export and history from s3://.

The tests take `bucket` (a fresh bucket's `<scheme>://bucket/prefix`, the environment pointed at
it); `test_storage_gcs.py` runs the same tests against `gs://` with its own `bucket` fixture.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer
from pyarrow.fs import FileSelector, S3FileSystem
from run_builder import build_run, hit, judgment
from test_history import OFFSETS, _night
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import RunError
from runner.evaluate.history import load_history
from runner.evaluate.run import evaluate_run
from runner.export.ids import export_run
from runner.judge.labels import LOG_FILE, Label, append_label, read_log, store_dir
from runner.judge.session import open_session
from runner.schema import HITS_SCHEMA, OPTIONAL_COLUMNS
from runner.store import scan_hits
from runner.store.atomic import atomic_write_bytes
from runner.store.labels_log import suite_log
from runner.store.location import resolve
from runner.store.merge import merge_runs
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
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
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
    infos = loc.fs.get_file_info(FileSelector(loc.path, allow_not_found=True, recursive=True))
    return sorted(i.path[len(loc.path) + 1 :] for i in infos if i.is_file)


def test_push_keeps_the_hive_layout(bucket: str, tmp_path: Path) -> None:
    run = build_run(tmp_path, hits=HITS)
    result = push_run(run, bucket)
    rel = "suite=test/run_date=2024-01-01/run_id=test-run"
    assert result.uri == f"{bucket}/{rel}"
    assert _objects(bucket) == [f"{rel}/{name}" for name in sorted(p.name for p in run.iterdir())]
    assert result.files[-1] == "manifest.json"  # uploaded last
    assert result.bytes == sum(p.stat().st_size for p in run.iterdir())
    assert read_manifest(result.uri)["run_id"] == "test-run"
    assert [loc.uri for loc in find_run_locations(bucket)] == [result.uri]


def test_push_refuses_a_second_push_and_a_running_run(bucket: str, tmp_path: Path) -> None:
    run = build_run(tmp_path / "a", hits=HITS)
    push_run(run, bucket)
    with pytest.raises(RunError, match="already there"):
        push_run(run, bucket)
    push_run(run, bucket, overwrite=True)
    running = build_run(tmp_path / "b", hits=HITS, run_id="busy", manifest={"status": "running"})
    with pytest.raises(RunError, match="still running"):
        push_run(running, bucket)
    assert not any("busy" in o for o in _objects(bucket))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_from_a_bucket_equals_export_from_disk(
    bucket: str, tmp_path: Path, fmt: str
) -> None:
    run = build_run(tmp_path, hits=HITS)
    remote = push_run(run, bucket).uri
    local_out, remote_out = tmp_path / f"local.{fmt}", tmp_path / f"remote.{fmt}"
    result = export_run(remote, remote_out, fmt=fmt, group_by="query", min_score=0.75)  # type: ignore[arg-type]
    export_run(run, local_out, fmt=fmt, group_by="query", min_score=0.75)  # type: ignore[arg-type]
    assert remote_out.read_bytes() == local_out.read_bytes()
    assert result.rows == 3  # m1 (0.9) for q1; m2 (0.8) and m3 (bm25 3.0) for q2; m2 of q1 is 0.7


def test_export_refuses_missing_and_corrupt_remote_runs(bucket: str, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such run"):
        export_run(f"{bucket}/suite=x/run_date=2024-01-01/run_id=none", tmp_path / "x.csv")
    run = build_run(tmp_path, hits=HITS)
    remote = push_run(run, bucket).uri  # push refuses a corrupt run: damage the copy in the bucket
    atomic_write_bytes(resolve(remote).child("hits.parquet"), b"PAR1 not parquet PAR1")
    with pytest.raises(RunError, match="corrupt Parquet"):
        export_run(remote, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_history_from_a_bucket_equals_history_from_disk(bucket: str, tmp_path: Path) -> None:
    for n, offset in enumerate(OFFSETS):
        push_run(_night(tmp_path, n, offset), bucket)
    local = load_history(tmp_path / "suite=test")
    remote = load_history(bucket, suite="test")
    assert remote.series.equals(local.series)
    assert remote.moved.select("mode", "run_id").rows() == [("semantic", "night-4")]


def test_cli_push_export_history_on_a_bucket(bucket: str, tmp_path: Path) -> None:
    cli = CliRunner()
    night = _night(tmp_path, 0, 0.0)
    result = cli.invoke(app, ["push", str(night), bucket])
    assert result.exit_code == 0, result.output
    remote = f"{bucket}/suite=test/run_date=2024-01-01/run_id=night-0"
    result = cli.invoke(app, ["export", remote])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["m1"]
    html = tmp_path / "h.html"
    result = cli.invoke(app, ["history", f"{bucket}/suite=test", "--html", str(html)])
    assert result.exit_code == 0, result.output
    assert html.exists()
    assert "testing" not in result.output  # the credentials never show
    result = cli.invoke(app, ["push", str(tmp_path / "nope"), bucket])
    assert result.exit_code == 2 and "no such run directory" in result.output
    assert pl.read_parquet(night / "metrics.parquet").height > 0


JUDGED = [judgment("q1", "m1"), judgment("q2", "m3", grade=2)]


def _shard(root: Path, k: int) -> Path:
    """Shard k/2 of a tiny suite: q1 in shard 1, q2 in shard 2, the same judgments."""
    mine = [h for h in HITS if h["query_id"] == f"q{k}"]
    return build_run(
        root / f"w{k}", hits=mine, judgments=JUDGED, run_id=f"s{k}", manifest={"shard": f"{k}/2"}
    )


def test_report_compare_and_judge_todo_read_a_run_on_a_bucket(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = CliRunner()
    run = build_run(tmp_path / "local", hits=HITS, judgments=JUDGED)
    remote = push_run(run, bucket).uri
    monkeypatch.chdir(tmp_path)  # a remote run is reported into ./reports/<its hive path>
    result = cli.invoke(app, ["report", remote])
    assert result.exit_code == 0, result.output
    here = tmp_path / "reports/suite=test/run_date=2024-01-01/run_id=test-run"
    assert result.stdout.strip() == str(
        Path("reports/suite=test/run_date=2024-01-01/run_id=test-run/report.html")
    )
    assert cli.invoke(app, ["report", str(run)]).exit_code == 0
    assert pl.read_parquet(here / "metrics.parquet").equals(
        pl.read_parquet(run / "metrics.parquet")
    )
    result = cli.invoke(app, ["compare", str(run), remote, "--fail-on", "nDCG@10<-0.01"])
    assert result.exit_code == 0, result.output  # the same rows: no delta trips the gate
    assert (here / "compare-test-run" / "report.html").is_file()
    todo_remote, todo_local = tmp_path / "remote.qrels", tmp_path / "local.qrels"
    for source, out in ((remote, todo_remote), (str(run), todo_local)):
        result = cli.invoke(app, ["judge-todo", source, "--out", str(out)])
        assert result.exit_code == 0, result.output
    assert todo_remote.read_bytes() == todo_local.read_bytes()
    missing = f"{bucket}/suite=test/run_date=2024-01-01/run_id=none"
    for command in (["report", missing], ["judge-todo", missing], ["compare", missing, remote]):
        result = cli.invoke(app, command)
        assert result.exit_code == 2 and "no such run directory" in result.output, command
    assert "testing" not in result.output


def test_merge_reads_shards_on_a_bucket(bucket: str, tmp_path: Path) -> None:
    shards = [_shard(tmp_path, k) for k in (1, 2)]
    remote = [push_run(shard, bucket).uri for shard in shards]
    result = CliRunner().invoke(app, ["merge", *remote, "--out", str(tmp_path / "from-bucket")])
    assert result.exit_code == 0, result.output
    local = merge_runs(shards, tmp_path / "from-disk", run_id="m")
    merged = merge_runs(remote, tmp_path / "from-bucket-lib", run_id="m")
    for table in ("requests.parquet", "hits.parquet", "judgments.parquet"):
        assert pl.read_parquet(merged.run_dir / table).equals(
            pl.read_parquet(local.run_dir / table)
        ), table
    with pytest.raises(RunError, match="shards 2/2 missing"):
        merge_runs(remote[:1], tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_push_copies_a_run_from_a_bucket_elsewhere(bucket: str, tmp_path: Path) -> None:
    run = build_run(tmp_path / "local", hits=HITS)
    remote = push_run(run, bucket).uri
    result = CliRunner().invoke(app, ["push", remote, str(tmp_path / "copy")])
    assert result.exit_code == 0, result.output
    copy = tmp_path / "copy/suite=test/run_date=2024-01-01/run_id=test-run"
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in run.iterdir())
    assert all((copy / p.name).read_bytes() == p.read_bytes() for p in run.iterdir())
    again = push_run(remote, f"{bucket}-mirror")
    assert read_manifest(again.uri)["run_id"] == "test-run"


def test_an_older_run_on_a_bucket_reads_with_the_thumbnail_column_as_nulls(
    bucket: str, tmp_path: Path
) -> None:
    run = build_run(tmp_path, hits=HITS)
    table = pq.read_table(run / "hits.parquet")
    pq.write_table(table.drop_columns(sorted(OPTIONAL_COLUMNS)), run / "hits.parquet")
    remote = push_run(run, bucket).uri
    hits = scan_hits(remote).collect()
    assert hits.columns == HITS_SCHEMA.names and hits["media_thumb_uri"].null_count() == 4
    assert hits.drop("media_thumb_uri").equals(scan_hits(run).collect().drop("media_thumb_uri"))


def test_a_missing_bucket_is_a_clear_error(bucket: str, tmp_path: Path) -> None:
    scheme = bucket.split("://")[0]
    missing = f"{scheme}://no-such-bucket-{secrets.token_hex(4)}"
    with pytest.raises(RunError, match="no such run"):
        export_run(f"{missing}/suite=test/run_date=2024-01-01/run_id=x", tmp_path / "x.csv")
    with pytest.raises(RunError, match=f"{missing}/nightly: no such directory"):
        find_run_locations(f"{missing}/nightly")
    run = build_run(tmp_path / "run", hits=HITS)
    with pytest.raises(RunError, match=f"^{missing}: no such bucket"):
        push_run(run, f"{missing}/nightly")
    result = CliRunner().invoke(app, ["push", str(run), f"{missing}/nightly"])
    assert result.exit_code == 2 and f"{missing}: no such bucket" in result.output, result.output
    assert "testing" not in result.output  # the credentials never show
    assert _objects(bucket) == []  # nothing written anywhere


HIVE = Path("suite=test/run_date=2024-01-01/run_id=test-run")


def _grade(rater: str, query: str, media: str, grade: int) -> Label:
    return Label(rater=rater, query_id=query, media_id=media, grade=grade, run_id="test-run")


def test_labels_travel_with_a_pushed_run_to_a_teammates_report(
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = build_run(tmp_path / "ana", hits=HITS)  # the run holds no judgments of its own
    store = store_dir(run)
    append_label(store, _grade("ana", "q1", "m2", 3))
    append_label(store, _grade("ana", "q2", "m3", 2))
    pushed = push_run(run, bucket)
    assert pushed.labels == 2
    remote_log = suite_log(resolve(pushed.uri))
    assert remote_log.uri == f"{bucket}/suite=test/_judgments/labels.jsonl"
    assert remote_log.read_bytes() == (store / LOG_FILE).read_bytes()

    elsewhere = tmp_path / "bo"  # a teammate's machine: no local copy of the run or labels
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    remote, local = evaluate_run(pushed.uri), evaluate_run(run)
    assert remote.qrels.height == 2 and remote.qrels.equals(local.qrels)
    assert remote.summary.equals(local.summary)
    pulled = store_dir(elsewhere / "reports" / HIVE)
    assert read_log(pulled).height == 2
    evaluate_run(pushed.uri)  # read again: nothing is added twice
    assert read_log(pulled).height == 2

    # Another night of the suite, one more label: the bucket's log gains that one only.
    append_label(store, _grade("ana", "q1", "m1", 1))
    night = build_run(tmp_path / "ana", hits=HITS, run_id="night-2")
    assert store_dir(night) == store
    result = CliRunner().invoke(app, ["push", str(night), bucket])
    assert result.exit_code == 0, result.output
    assert ", 1 new label(s) of the suite" in result.stdout
    assert remote_log.read_bytes() == (store / LOG_FILE).read_bytes()
    assert "testing" not in result.output  # the credentials never show


def test_a_run_on_a_bucket_is_judged_in_place_and_its_labels_come_home(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = build_run(tmp_path / "ana", hits=HITS)
    store = store_dir(run)
    append_label(store, _grade("ana", "q1", "m2", 3))
    pushed = push_run(run, bucket)
    shared = suite_log(resolve(pushed.uri))

    elsewhere = tmp_path / "bo"  # a teammate judges the pushed run from another machine
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    session = open_session(pushed.uri, rater="bo", k=10)
    items = {(item.query_id, item.media_id) for item in session.items}
    assert ("q1", "m1") in items and ("q1", "m2") not in items  # ana graded q1/m2 already
    session.grade("q1", "m1", 2)
    session.close()
    assert session.sent == 1
    raters = [orjson.loads(line)["rater"] for line in shared.read_bytes().splitlines()]
    assert raters == ["ana", "bo"]
    qrels = evaluate_run(pushed.uri).qrels  # bo's report counts both raters' labels
    assert sorted(qrels.select("media_id", "grade").rows()) == [("m1", 2), ("m2", 3)]

    # Ana's next push brings bo's label home: her own report of the run counts it too.
    night = build_run(tmp_path / "ana", hits=HITS, run_id="night-2")
    result = push_run(night, bucket)
    assert (result.labels, result.labels_received) == (0, 1)
    assert read_log(store)["rater"].to_list() == ["ana", "bo"]
    assert evaluate_run(run).qrels.equals(qrels)
