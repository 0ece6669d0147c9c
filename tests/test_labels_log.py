"""The suite's judgments log as a file: the merge of two logs, the append after a crash, merge.

The round trip through a bucket (push, then a teammate's report) is in `test_storage.py`, so
that it runs on s3:// and gs:// alike.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from test_storage import HIVE, _shard
from test_storage import _grade as _label

from runner.errors import RunError
from runner.evaluate.run import evaluate_run
from runner.judge.labels import LOG_FILE, append_label, read_log, store_dir
from runner.store.labels_log import missing_lines, suite_log, sync_log
from runner.store.location import resolve
from runner.store.merge import merge_runs


def test_missing_lines_are_the_whole_new_lines_in_their_order_once() -> None:
    have = b"a\nb\n"
    assert missing_lines(have, b"b\nc\na\nd\nc\n") == b"c\nd\n"
    assert missing_lines(have, b"c\nd") == b"c\n"  # a torn last line is no line
    assert missing_lines(b"", b"\n\nx\n") == b"x\n"  # blank lines are none either
    assert missing_lines(have + b"tor", b"tor\n") == b"tor\n"  # a torn line is not had


def test_a_label_after_a_crash_mid_label_leaves_a_readable_log(tmp_path: Path) -> None:
    store = tmp_path / "store"
    append_label(store, _label("ana", "q1", "m1", 1))
    with open(store / LOG_FILE, "ab") as f:
        f.write(b'{"time": "2024-01-01T00:00:00+00:00", "rater": "ana", "op": "gr')  # a crash
    append_label(store, _label("ana", "q1", "m2", 2))
    log = read_log(store)  # the torn label was cut off, not glued to the new one
    assert log.select("media_id", "grade").rows() == [("m1", 1), ("m2", 2)]


def test_the_log_beside_a_run_wherever_it_is(tmp_path: Path) -> None:
    run = resolve(tmp_path / HIVE)
    assert Path(suite_log(run).path) == store_dir(tmp_path / HIVE) / LOG_FILE
    loose = resolve(tmp_path / "copy")
    assert Path(suite_log(loose).path) == store_dir(tmp_path / "copy") / LOG_FILE
    remote = resolve(f"s3://bucket/nightly/{HIVE.as_posix()}/", environ={})
    assert suite_log(remote).uri == "s3://bucket/nightly/suite=test/_judgments/labels.jsonl"
    assert suite_log(remote).path == "bucket/nightly/suite=test/_judgments/labels.jsonl"


def test_sync_adds_only_what_the_target_lacks(tmp_path: Path) -> None:
    source, target = tmp_path / "a" / LOG_FILE, tmp_path / "b" / LOG_FILE
    append_label(source.parent, _label("ana", "q1", "m1", 1))
    append_label(source.parent, _label("ana", "q1", "m2", 2))
    assert sync_log(resolve(source), resolve(target)) == 2
    assert sync_log(resolve(source), resolve(target)) == 0
    append_label(target.parent, _label("bo", "q1", "m1", 0))
    assert sync_log(resolve(source), resolve(target)) == 0  # nothing of the target is removed
    assert read_log(target.parent)["rater"].to_list() == ["ana", "ana", "bo"]
    assert sync_log(resolve(tmp_path / "none" / LOG_FILE), resolve(target)) == 0


def test_a_merge_joins_the_shards_judgments_logs(tmp_path: Path) -> None:
    shards = [_shard(tmp_path, k) for k in (1, 2)]
    append_label(store_dir(shards[0]), _label("ana", "q1", "m1", 3))
    append_label(store_dir(shards[1]), _label("bo", "q2", "m3", 1))
    with open(store_dir(shards[1]) / LOG_FILE, "ab") as log:
        log.write((store_dir(shards[0]) / LOG_FILE).read_bytes())  # a label both logs hold
    result = merge_runs(shards, tmp_path / "out")
    assert result.labels == 2
    merged = read_log(store_dir(result.run_dir))
    assert sorted(merged.select("rater", "media_id").rows()) == [("ana", "m1"), ("bo", "m3")]
    qrels = evaluate_run(result.run_dir).qrels
    assert qrels.filter(pl.col("media_id") == "m1")["grade"].to_list() == [3]  # ana's label


def test_a_log_with_a_bad_line_spoils_nothing_it_is_synced_to(tmp_path: Path) -> None:
    source, target = tmp_path / "a" / LOG_FILE, tmp_path / "b" / LOG_FILE
    append_label(target.parent, _label("bo", "q1", "m1", 0))
    before = target.read_bytes()
    append_label(source.parent, _label("ana", "q1", "m2", 2))
    with open(source, "ab") as log:
        log.write(b"<html>not a label</html>\n")
    with pytest.raises(RunError, match=r"a/labels.jsonl: a line is not a JSON object .*<html>"):
        sync_log(resolve(source), resolve(target))
    assert target.read_bytes() == before
