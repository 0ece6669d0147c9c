"""`vlbench merge`: shard runs joined into one run identical to an unsharded run of the suite."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from helpers_exec import run_sync, write_suite
from typer.testing import CliRunner

import runner.store.merge as merge_module
from runner.cli import app
from runner.errors import RunError
from runner.execute import RunResult
from runner.schema import MANIFEST_FILE
from runner.server.lifecycle import ServerThread
from runner.store import open_run, scan_hits, scan_judgments, scan_requests
from runner.store.merge import canonical_order, merge_runs

# Columns that record when and how fast a request went: they differ between any two runs.
TIMING = ("sent_at", "latency_ms", "attempts")


@pytest.fixture(scope="module")
def runs(
    demo_server: ServerThread, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, RunResult]:
    """The same suite run unsharded and as shards 1/2 and 2/2 (fts and semantic, 2 pages)."""
    folder = tmp_path_factory.mktemp("merge")
    suite = write_suite(
        folder,
        demo_server,
        name="merge-test",
        modes=["fts", "semantic"],
        sweep={"semantic_threshold": [0.5, 0.7]},
        pagination={"max_pages": 2},
    )
    return {
        "whole": run_sync(suite, folder / "whole"),
        "1/2": run_sync(suite, folder / "w1", shard_of=(1, 2)),
        "2/2": run_sync(suite, folder / "w2", shard_of=(2, 2)),
    }


def test_shards_are_disjoint_and_complete(runs: dict[str, RunResult]) -> None:
    keys = {
        name: set(scan_requests(r.run_dir).select("request_key").collect().to_series())
        for name, r in runs.items()
    }
    assert all(r.status == "complete" for r in runs.values())
    assert keys["1/2"] and keys["2/2"] and not keys["1/2"] & keys["2/2"]
    assert keys["1/2"] | keys["2/2"] == keys["whole"]


def test_merge_equals_the_unsharded_run_row_for_row(
    runs: dict[str, RunResult], tmp_path: Path
) -> None:
    result = merge_runs([runs["2/2"].run_dir, runs["1/2"].run_dir], tmp_path)
    whole = runs["whole"].run_dir
    for table, scan in (("requests", scan_requests), ("hits", scan_hits)):
        merged = scan(result.run_dir).collect()
        expected = canonical_order(scan(whole), table).collect()
        assert merged.drop(TIMING, strict=False).equals(expected.drop(TIMING, strict=False)), table
        assert merged.height == expected.height > 0
    assert scan_judgments(result.run_dir).collect().equals(scan_judgments(whole).collect())
    info, single = open_run(result.run_dir), open_run(whole)
    assert info.status == "complete" and info.shard is None
    assert info.counts == single.counts
    assert info.suite_hash == single.suite_hash
    assert [m["shard"] for m in info.manifest["merged_from"]] == ["1/2", "2/2"]
    assert result.run_dir.parent.parent.name == "suite=merge-test"


def test_merging_twice_gives_identical_files(runs: dict[str, RunResult], tmp_path: Path) -> None:
    shards = [runs["1/2"].run_dir, runs["2/2"].run_dir]
    a = merge_runs(shards, tmp_path / "a", run_id="same")
    b = merge_runs(list(reversed(shards)), tmp_path / "b", run_id="same")
    for name in ("requests.parquet", "hits.parquet", "judgments.parquet"):
        assert pl.read_parquet(a.run_dir / name).equals(pl.read_parquet(b.run_dir / name))


def test_merging_in_key_ranges_gives_the_same_files(
    runs: dict[str, RunResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = [runs["1/2"].run_dir, runs["2/2"].run_dir]
    whole = merge_runs(shards, tmp_path / "a", run_id="same")
    monkeypatch.setattr(merge_module, "ROWS_PER_SORT", 100)  # thousands of hits: many ranges
    ranged = merge_runs(shards, tmp_path / "b", run_id="same")
    for name in ("requests.parquet", "hits.parquet"):
        assert pl.read_parquet(ranged.run_dir / name).equals(pl.read_parquet(whole.run_dir / name))


def _copy(run_dir: Path, dest: Path, **manifest_changes: object) -> Path:
    target = dest / run_dir.name
    shutil.copytree(run_dir, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    manifest.update(manifest_changes)
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize(
    "case, message",
    [
        pytest.param("missing", r"shards 2/2 missing", id="missing-shard"),
        pytest.param("twice", r"shard 1/2 given twice", id="repeated-shard"),
        pytest.param("other-suite", r"suite_hash .* differs", id="other-suite"),
        pytest.param("partial", r"run is partial, not complete", id="partial"),
        pytest.param("running", r"still running", id="running"),
        pytest.param("unsharded", r"not a shard", id="unsharded"),
        pytest.param("other-split", r"shards of different splits", id="other-split"),
    ],
)
def test_refusals(runs: dict[str, RunResult], tmp_path: Path, case: str, message: str) -> None:
    one, two = runs["1/2"].run_dir, runs["2/2"].run_dir
    cases: dict[str, Callable[[], list[Path]]] = {
        "missing": lambda: [one],
        "twice": lambda: [one, _copy(one, tmp_path)],
        "other-suite": lambda: [one, _copy(two, tmp_path, suite_hash="f" * 16)],
        "partial": lambda: [one, _copy(two, tmp_path, status="partial")],
        "running": lambda: [one, _copy(two, tmp_path, status="running")],
        "unsharded": lambda: [one, runs["whole"].run_dir],
        "other-split": lambda: [one, _copy(two, tmp_path, shard="2/3")],
    }
    dirs = cases[case]()
    out = tmp_path / "merged"
    with pytest.raises(RunError, match=message):
        merge_runs(dirs, out)
    assert not out.exists()


def test_cli_merge_and_refusal(runs: dict[str, RunResult], tmp_path: Path) -> None:
    cli = CliRunner()
    shards = [str(runs["1/2"].run_dir), str(runs["2/2"].run_dir)]
    result = cli.invoke(app, ["merge", *shards, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{runs['whole'].counts.hits} hits" in result.output
    result = cli.invoke(app, ["merge", shards[0], "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "missing" in result.output


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"PAR1 not parquet PAR1"), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-40]), id="truncated"),
    ],
)
def test_a_corrupt_shard_leaves_nothing_behind(
    runs: dict[str, RunResult], tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    two = _copy(runs["2/2"].run_dir, tmp_path)
    damage(two / "hits.parquet")
    out = tmp_path / "merged"
    with pytest.raises(RunError, match=r"hits\.parquet: corrupt Parquet"):
        merge_runs([runs["1/2"].run_dir, two], out)
    assert not out.exists()  # no suite=/run_date= folders either


def test_a_merge_failing_midway_leaves_nothing_behind(
    runs: dict[str, RunResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: object) -> None:
        raise RunError("merge of hits failed: unreadable row group")

    monkeypatch.setattr(merge_module, "_write_table", failing)
    (tmp_path / "merged").mkdir()  # a root that exists already stays
    with pytest.raises(RunError, match="unreadable row group"):
        merge_runs([runs["1/2"].run_dir, runs["2/2"].run_dir], tmp_path / "merged")
    assert list((tmp_path / "merged").iterdir()) == []
