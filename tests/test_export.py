"""`vlbench export RUN`: deduplicated media IDs out of a run, in four formats, filtered, atomic."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest
from run_builder import build_run, hit
from typer.testing import CliRunner

import runner.export.ids as export_module
from runner.cli import app
from runner.errors import RunError, UsageError, WriteError
from runner.export.ids import EXPORT_COLUMNS, GROUPINGS, export_run
from runner.schema import HITS_FILE, normalise_score

# Three queries, two modes with different score types, overlapping media.
HITS: list[dict[str, Any]] = [
    hit("q1", "m1", mode="semantic", raw_score=0.10),
    hit("q1", "m2", mode="semantic", raw_score=0.25),
    hit("q1", "m3", mode="semantic", raw_score=0.40),
    hit("q1", "m1", mode="fts", score_type="bm25", raw_score=7.5),
    hit("q1", "m4", mode="fts", score_type="bm25", raw_score=3.0),
    hit("q2", "m2", mode="semantic", raw_score=0.05),
    hit("q2", "m5", mode="semantic", raw_score=0.30),
    hit("q2", "m2", mode="fts", score_type="bm25", raw_score=2.0),
    hit("q3", "m6", mode="fts", score_type="bm25", raw_score=1.0),
    hit("q3", "m1", mode="fts", score_type="bm25", raw_score=0.5),
]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return build_run(tmp_path / "runs", hits=HITS)


def _ranked(hits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hits with the rank and normalised score `build_run` gives them."""
    out: list[dict[str, Any]] = []
    counters: dict[tuple[str, str], int] = {}
    for h in hits:
        key = (h["query_id"], h["mode"])
        counters[key] = counters.get(key, 0) + 1
        score_type = h.get("score_type", "cosine_distance")
        out.append(
            {
                **h,
                "score_type": score_type,
                "rank": counters[key],
                "score": normalise_score(h["raw_score"], score_type),
                "setting": "default",
                "file_name": f"{h['media_id']}.jpg",
            }
        )
    return out


def expected(
    group_by: str,
    *,
    modes: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    min_score: float | None = None,
    top_k: int | None = None,
) -> list[dict[str, Any]]:
    """The export, computed the slow obvious way from HITS."""
    keys = GROUPINGS[group_by]
    kept = [
        h
        for h in _ranked(HITS)
        if (not modes or h["mode"] in modes)
        and (not queries or h["query_id"] in queries)
        and (min_score is None or h["score"] >= min_score)
        and (top_k is None or h["rank"] <= top_k)
    ]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for h in kept:
        groups.setdefault((*(h[k] for k in keys), h["media_id"]), []).append(h)
    rows = []
    for (*group, media_id), members in groups.items():
        best = max(members, key=lambda h: h["score"])
        rows.append(
            {
                **dict(zip(keys, group, strict=True)),
                "media_id": media_id,
                "file_name": min(h["file_name"] for h in members),
                "score": best["score"],
                "raw_score": best["raw_score"],
                "score_type": best["score_type"],
                "best_rank": min(h["rank"] for h in members),
                "n_hits": len(members),
                "queries": sorted({h["query_id"] for h in members}),
                "modes": sorted({h["mode"] for h in members}),
            }
        )
    rows.sort(key=lambda r: r["media_id"])
    rows.sort(key=lambda r: -r["score"])
    rows.sort(key=lambda r: tuple(r[k] for k in keys))
    return rows


@pytest.mark.parametrize("group_by", list(GROUPINGS))
def test_parquet_rows_match_the_reference_for_every_grouping(
    run_dir: Path, tmp_path: Path, group_by: str
) -> None:
    out = tmp_path / "ids.parquet"
    result = export_run(run_dir, out, fmt="parquet", group_by=group_by)
    rows = pl.read_parquet(out).to_dicts()
    want = expected(group_by)
    assert result.rows == len(want)
    assert [r["media_id"] for r in rows] == [r["media_id"] for r in want]
    for got, exp in zip(rows, want, strict=True):
        for column, value in exp.items():
            assert got[column] == (pytest.approx(value) if isinstance(value, float) else value)
    assert list(pl.read_parquet(out).columns) == [*GROUPINGS[group_by], *EXPORT_COLUMNS]


def test_merged_is_deduplicated(run_dir: Path, tmp_path: Path) -> None:
    export_run(run_dir, tmp_path / "ids.txt", fmt="txt")
    ids = (tmp_path / "ids.txt").read_text().splitlines()
    assert len(ids) == len(set(ids)) == len({h["media_id"] for h in HITS})


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "txt"])
def test_text_formats_hold_the_same_rows(run_dir: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"ids.{fmt}"
    result = export_run(run_dir, out, fmt=fmt, group_by="query")  # type: ignore[arg-type]
    want = expected("query")
    text = out.read_text(encoding="utf-8")
    if fmt == "txt":
        assert text.splitlines() == [r["media_id"] for r in want]
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        assert [(r["query_id"], r["media_id"], r["queries"]) for r in rows] == [
            (r["query_id"], r["media_id"], r["queries"]) for r in want
        ]
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [(r["query_id"], r["media_id"]) for r in rows] == [
            (r["query_id"], r["media_id"]) for r in want
        ]
        assert [r["modes"] for r in rows] == [";".join(r["modes"]) for r in want]
        assert [float(r["score"]) for r in rows] == pytest.approx([r["score"] for r in want])
    assert result.rows == len(want)


@pytest.mark.parametrize(
    "filters",
    [
        pytest.param({"modes": ["semantic"]}, id="mode"),
        pytest.param({"queries": ["q2", "q3"]}, id="queries"),
        pytest.param({"min_score": 0.75}, id="min-score-normalised"),
        pytest.param({"top_k": 1}, id="top-k"),
        pytest.param({"modes": ["fts"], "min_score": 2.0, "top_k": 2}, id="combined"),
    ],
)
def test_filters(run_dir: Path, tmp_path: Path, filters: dict[str, Any]) -> None:
    out = tmp_path / "ids.parquet"
    export_run(run_dir, out, fmt="parquet", group_by="query-mode", **filters)
    got = pl.read_parquet(out).select("query_id", "mode", "media_id").rows()
    want = [(r["query_id"], r["mode"], r["media_id"]) for r in expected("query-mode", **filters)]
    assert got == want and want


def test_min_score_reads_the_normalised_score_not_the_raw(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ids.parquet"
    export_run(run_dir, out, fmt="parquet", modes=["semantic"], min_score=0.75)
    kept = set(pl.read_parquet(out)["media_id"])
    # distance 0.10 and 0.05 and 0.25 -> 0.90, 0.95, 0.75 kept; 0.30 and 0.40 -> 0.70, 0.60 not.
    assert kept == {"m1", "m2"}


def test_partitioned_aggregation_gives_the_same_file(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = tmp_path / "one.parquet"
    export_run(run_dir, one, fmt="parquet", group_by="query")
    monkeypatch.setattr(export_module, "HITS_PER_PARTITION", 3)  # 10 hits -> 4 partitions
    many = tmp_path / "many.parquet"
    export_run(run_dir, many, fmt="parquet", group_by="query")
    assert pl.read_parquet(many).equals(pl.read_parquet(one))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.parquet", "one.parquet", "runs"]


def test_unknown_mode_or_query_is_refused(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no mode caption"):
        export_run(run_dir, tmp_path / "x.csv", modes=["caption"])
    with pytest.raises(UsageError, match="no query q9"):
        export_run(run_dir, tmp_path / "x.csv", queries=["q9"])
    assert not (tmp_path / "x.csv").exists()


def test_refuses_unknown_and_running_runs(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such run directory"):
        export_run(tmp_path / "nope", tmp_path / "x.csv")
    running = build_run(tmp_path / "runs", hits=HITS, manifest={"status": "running"})
    with pytest.raises(RunError, match="still running"):
        export_run(running, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_refuses_a_corrupt_parquet_file(run_dir: Path, tmp_path: Path) -> None:
    (run_dir / HITS_FILE).write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(RunError, match="corrupt Parquet"):
        export_run(run_dir, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def _corrupt_media_ids(path: Path) -> None:
    """Garble the media_id column's first page header; the footer (the schema) stays readable."""
    meta = pq.ParquetFile(path).metadata
    column = meta.schema.names.index("media_id")
    offset = meta.row_group(0).column(column).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 24] = b"\xff" * 24
    path.write_bytes(bytes(data))


def test_a_failure_mid_write_leaves_the_old_file_and_no_temp(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ids.csv"
    out.write_text("old content\n")
    _corrupt_media_ids(run_dir / HITS_FILE)
    with pytest.raises(RunError, match="cannot export"):
        export_run(run_dir, out, fmt="csv")
    assert out.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.csv", "runs"]


def test_a_failure_at_the_rename_leaves_no_file(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(WriteError, match="disk full"):
        export_run(run_dir, tmp_path / "ids.parquet", fmt="parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_cli_writes_txt_to_stdout_and_a_file(run_dir: Path, tmp_path: Path) -> None:
    cli = CliRunner()
    result = cli.invoke(app, ["export", str(run_dir), "--mode", "fts"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [r["media_id"] for r in expected("merged", modes=["fts"])]
    out = tmp_path / "ids.jsonl"
    result = cli.invoke(app, ["export", str(run_dir), "-o", str(out), "-g", "mode"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == len(expected("mode"))


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--format", "xml"], "--format xml", id="bad-format"),
        pytest.param(["--group-by", "colour"], "group by 'colour'", id="bad-grouping"),
        pytest.param(["--top-k", "0"], "top-k 0", id="bad-top-k"),
        pytest.param(["--verify"], "need --live", id="verify-without-live"),
    ],
)
def test_cli_bad_input_exits_2(run_dir: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["export", str(run_dir), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_running_run_exits_2(tmp_path: Path) -> None:
    running = build_run(tmp_path, hits=HITS, manifest={"status": "running"})
    result = CliRunner().invoke(app, ["export", str(running), "-o", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "still running" in result.output
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("command", ["export", "merge", "push", "history"])
def test_commands_have_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert f"Example: vlbench {command}" in " ".join(result.output.split())
