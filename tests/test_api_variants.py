"""The client meets every variant the hosted API documents (`explore-api.md`, its last section).

Each test replays the documented body over a real socket (the `replay` fixture: an aiohttp app
on 127.0.0.1 serving canned answers), so it holds whatever our own local server answers.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from helpers_exec import QUERIES, request_rows, run_sync, write_suite
from helpers_replay import (
    CONTEXT_ALL,
    DATASET_READY,
    DOCUMENTED_ANSWER,
    LEGACY_ANSWER,
    Canned,
    ReplayServer,
    json_zip,
    parquet_zip,
)
from typer.testing import CliRunner

from runner.api.client import ExploreClient
from runner.api.retry import RetryPolicy
from runner.cli import app
from runner.errors import ApiError, ExportError
from runner.export.jobs import JobEnd, JobOptions, download_ids, run_export_job
from runner.export.live import LiveOptions, live_export
from runner.store import read_manifest, scan_hits
from runner.suite import load_suite


async def _no_wait(_: float) -> None:
    await asyncio.sleep(0)


FAST_JOB = JobOptions(poll_interval_s=0.0, max_wait_s=60.0, sleep=_no_wait)
FAST_LIVE = LiveOptions(poll_interval_s=0.0, max_wait_s=60.0, sleep=_no_wait)
START = {"vql": '[{"text": {"op": "fts", "value": "dog"}}]', "entity_type": "IMAGES"}
ONE_QUERY = ({"id": "q1", "text": "a dog on the beach"},)


def suite_for(folder: Path, api: ReplayServer, **settings: Any) -> Path:
    """A suite against the replay server (no auth: the replay checks none)."""
    settings.setdefault("retries", {"max_attempts": 3, "backoff_s": 0.001, "max_backoff_s": 0.001})
    return write_suite(folder, None, base_url=api.base_url, dataset_id=api.dataset_id, **settings)


def client_for(api: ReplayServer) -> ExploreClient:
    return ExploreClient(api.base_url, api.dataset_id)


async def export_ids(api: ReplayServer, tmp_path: Path) -> tuple[JobEnd, list[dict[str, Any]]]:
    async with client_for(api) as client:
        end = await run_export_job(client, START, what="export", options=FAST_JOB)
        rows: list[dict[str, Any]] = []
        if end.status == "COMPLETED":
            async for table in download_ids(client, end, tmp_path, what="x", options=FAST_JOB):
                rows += table.to_pylist()
    return end, rows


# -- export jobs ---------------------------------------------------------------------------------

ITEMS = [
    {"media_id": "m1", "file_name": "a.jpg", "file_path": "/d/a.jpg", "cluster_id": "c1"},
    {"media_id": "m2", "file_name": "b.jpg", "file_path": "/d/b.jpg", "cluster_id": "c1"},
]
WANT = [{"media_id": "m1", "file_name": "a.jpg"}, {"media_id": "m2", "file_name": "b.jpg"}]


@pytest.mark.parametrize(
    "archive",
    [
        pytest.param(json_zip(ITEMS), id="metadata.json-documented-object"),
        pytest.param(json_zip(ITEMS, documented=False), id="metadata.json-bare-list"),
        pytest.param(
            parquet_zip({"media_id": ["m1", "m2"], "file_name": ["a.jpg", "b.jpg"]}),
            id="parquet-file_name",
        ),
        pytest.param(
            parquet_zip({"media_id": ["m1", "m2"], "image_filename": ["a.jpg", "b.jpg"]}),
            id="parquet-image_filename",
        ),
        pytest.param(
            json_zip([{"media_id": "m1", "image_filename": "a.jpg"}, {**WANT[1]}]),
            id="metadata.json-each-row-its-own-name",
        ),
        pytest.param(
            parquet_zip({"media_id": ["m1", "m2"], "filename": ["a.jpg", "b.jpg"]}),
            id="parquet-filename",
        ),
    ],
)
async def test_export_metadata_variants_give_the_same_ids(
    replay: ReplayServer, tmp_path: Path, archive: bytes
) -> None:
    replay.answer("download", Canned(archive))
    end, rows = await export_ids(replay, tmp_path)
    assert end.status == "COMPLETED"
    assert rows == WANT


async def test_export_start_always_sends_file_name_and_format(
    replay: ReplayServer, tmp_path: Path
) -> None:
    suite = load_suite(suite_for(tmp_path, replay, queries=list(ONE_QUERY)))
    await live_export(suite, tmp_path / "ids.csv", options=FAST_LIVE, environ={})
    (start,) = replay.calls("export_start")
    assert start["file_name"] and start["export_format"] == "parquet"
    assert json.loads(start["vql"]) == [{"text": {"op": "fts", "value": "a dog on the beach"}}]


@pytest.mark.parametrize(
    "start, polls",
    [
        pytest.param({"id": "fdb84834-d19b-4797-861a-d48b7a16f908"}, 2, id="id-alone"),
        pytest.param(
            {"id": "t1", "status": "IN_PROGRESS", "progress": 0.25, "entities_count": 2},
            2,
            id="whole-task-float-progress",
        ),
        pytest.param(
            {"id": "t1", "status": "COMPLETED", "progress": 1.0, "download_uri": "/files/x.zip"},
            0,
            id="already-completed",
        ),
    ],
)
async def test_export_start_answers(
    replay: ReplayServer, tmp_path: Path, start: dict[str, Any], polls: int
) -> None:
    replay.answer("export_start", Canned(start))
    replay.answer(
        "export_status",
        Canned({"status": "IN_PROGRESS", "progress": 0.5}),
        Canned({"status": "COMPLETED", "progress": 1.0, "download_uri": "/files/x.zip"}),
    )
    replay.answer("download", Canned(json_zip(ITEMS)))
    end, rows = await export_ids(replay, tmp_path)
    assert end.status == "COMPLETED" and rows == WANT
    assert end.task_id == start["id"]
    assert len(replay.calls("export_status")) == polls
    assert all(c["export_task_id"] == start["id"] for c in replay.calls("export_status"))


ENDS = [
    pytest.param(
        [Canned({"id": "t1", "status": "REJECTED", "result_message": "exceeds 100000 entities"})],
        [],
        "REJECTED: exceeds 100000 entities",
        id="start-already-rejected",
    ),
    pytest.param(
        [Canned({"id": "t1"})],
        [Canned({"status": "CANCELED", "result_message": "cancelled by the user"})],
        "CANCELED: cancelled by the user",
        id="canceled",
    ),
    pytest.param(
        [Canned({"id": "t1"})],
        [Canned({"status": "CANCELLED", "result_message": "cancelled by an admin"})],
        "CANCELED: cancelled by an admin",
        id="cancelled",
    ),
    pytest.param(
        [Canned({"id": "t1"})],
        [Canned({"status": "IN_PROGRESS", "error": "Export exceeds threshold"})],
        "ERROR: Export exceeds threshold",
        id="error-in-a-200-while-polling",
    ),
    pytest.param(
        [Canned({"error": "Export exceeds threshold"})],
        [],
        "ERROR: Export exceeds threshold",
        id="error-in-a-200-at-the-start",
    ),
]


@pytest.mark.parametrize("start, status, said", ENDS)
async def test_a_job_that_ends_without_ids_falls_back_to_paging_at_once(
    replay: ReplayServer, tmp_path: Path, start: list[Canned], status: list[Canned], said: str
) -> None:
    replay.answer("export_start", *start)
    if status:
        replay.answer("export_status", *status)
    suite = load_suite(suite_for(tmp_path, replay, queries=list(ONE_QUERY)))
    result = await live_export(
        suite, tmp_path / "ids.txt", fmt="txt", options=FAST_LIVE, environ={}
    )
    (outcome,) = result.outcomes
    assert outcome.method == "pagination"
    assert outcome.note is not None and said in outcome.note and "paged through" in outcome.note
    assert "None" not in outcome.note
    assert len(replay.calls("export_status")) == len(status)  # ended at once, no waiting
    assert (tmp_path / "ids.txt").read_text().split() == ["300dad2c-1234-11f1-8483-5a879df30de4"]


@pytest.mark.parametrize("start, status, said", ENDS)
async def test_without_fallback_the_end_is_one_clear_error(
    replay: ReplayServer, tmp_path: Path, start: list[Canned], status: list[Canned], said: str
) -> None:
    replay.answer("export_start", *start)
    if status:
        replay.answer("export_status", *status)
    suite = load_suite(suite_for(tmp_path, replay, queries=list(ONE_QUERY)))
    options = LiveOptions(poll_interval_s=0.0, sleep=_no_wait, fallback=False)
    with pytest.raises(ExportError, match=f"query q1 .*{said}"):
        await live_export(suite, tmp_path / "ids.txt", options=options, environ={})
    assert not (tmp_path / "ids.txt").exists()
    assert replay.calls("explore") == []


async def test_export_calls_retry_408_and_bad_bodies_like_searches(
    replay: ReplayServer, tmp_path: Path
) -> None:
    replay.answer(
        "export_status",
        Canned({"detail": "Request Timeout"}, status=408),
        Canned(b"<html>502 from the proxy</html>"),
        Canned({"status": "COMPLETED", "download_uri": "/files/x.zip"}),
    )
    replay.answer("download", Canned(json_zip(ITEMS)))
    end, rows = await export_ids(replay, tmp_path)
    assert end.status == "COMPLETED" and rows == WANT
    assert len(replay.calls("export_status")) == 3


# -- dataset status -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, caveat",
    [
        pytest.param({"status_new": "READY"}, None, id="READY"),
        pytest.param({"status_new": "READ ONLY"}, "READ ONLY", id="READ-ONLY"),
        pytest.param({"status_new": "PARTIAL INDEX"}, "PARTIAL INDEX", id="PARTIAL-INDEX"),
        pytest.param({"status": "READY"}, None, id="legacy-READY"),
    ],
)
def test_searchable_statuses_run_and_are_noted(
    replay: ReplayServer, tmp_path: Path, body: dict[str, Any], caveat: str | None
) -> None:
    replay.answer("dataset", Canned({"id": replay.dataset_id, "n_images": 3, **body}))
    result = run_sync(suite_for(tmp_path, replay), tmp_path / "out", environ={})
    assert result.status == "complete" and result.exit_code == 0
    manifest = read_manifest(result.run_dir)
    if caveat is None:
        assert manifest["dataset_status"] == "READY" and manifest["dataset_caveat"] is None
        return
    assert manifest["dataset_status"] == caveat and caveat in manifest["dataset_caveat"]
    report = CliRunner().invoke(app, ["report", str(result.run_dir)])
    assert report.exit_code == 0, report.output
    assert f"{caveat}" in (result.run_dir / "report.md").read_text()
    assert f"{caveat}" in (result.run_dir / "report.html").read_text()


@pytest.mark.parametrize(
    "body, named",
    [
        pytest.param({"status_new": "DRAFT"}, "is DRAFT", id="DRAFT"),
        pytest.param({"status_new": "INDEXING"}, "is INDEXING", id="INDEXING"),
        pytest.param({"status_new": "ERROR"}, "is ERROR", id="ERROR"),
        pytest.param({"status": "FATAL_ERROR"}, "is ERROR: .*'FATAL_ERROR'", id="legacy-FATAL"),
        pytest.param(
            {"status": "ENRICHING"}, "is INDEXING: .*'ENRICHING'.*wait", id="legacy-ENRICHING"
        ),
        pytest.param({"status": "NEW"}, "is DRAFT: .*'NEW'", id="legacy-NEW"),
        pytest.param({"status_new": "ARCHIVED"}, "is ARCHIVED", id="unknown-status"),
    ],
)
def test_unsearchable_statuses_are_refused_naming_the_status(
    replay: ReplayServer, tmp_path: Path, body: dict[str, Any], named: str
) -> None:
    replay.answer("dataset", Canned({"id": replay.dataset_id, **body}))
    with pytest.raises(ApiError, match=named) as caught:
        run_sync(suite_for(tmp_path, replay), tmp_path / "out", environ={})
    assert caught.value.status == 409
    assert replay.calls("explore") == [] and not (tmp_path / "out").exists()


# -- feature flags ---------------------------------------------------------------------------------

SEMANTIC_OFF = [
    pytest.param({"semantic_search": False}, id="flat"),
    pytest.param(
        {"features": {"text_search_of_images": {"semantic_search": {"enabled": False}}}},
        id="nested",
    ),
    pytest.param({"features": [{"name": "Semantic Search", "enabled": False}]}, id="list"),
    pytest.param({"disabled_features": ["semantic_search"]}, id="disabled-names"),
]


@pytest.mark.parametrize("config", SEMANTIC_OFF)
def test_a_disabled_feature_refuses_its_mode_before_any_search(
    replay: ReplayServer, tmp_path: Path, config: dict[str, Any]
) -> None:
    replay.answer("user_config", Canned(config))
    suite = suite_for(tmp_path, replay, modes=["fts", "semantic"])
    with pytest.raises(ApiError, match="mode semantic needs the feature semantic_search") as caught:
        run_sync(suite, tmp_path / "out", environ={})
    assert caught.value.status == 403
    assert replay.calls("explore") == [] and not (tmp_path / "out").exists()
    assert replay.calls("user_config") == [{"dataset_id": replay.dataset_id}]


def test_the_local_servers_feature_answer_is_read(replay: ReplayServer, tmp_path: Path) -> None:
    # {"dataset_id", "features": {name: bool}}, as `vlbench serve --disable-feature` answers.
    names = ("captions_search", "semantic_search", "labels_search", "full_text_search")
    features = {name: name != "full_text_search" for name in names}
    replay.answer("user_config", Canned({"dataset_id": replay.dataset_id, "features": features}))
    with pytest.raises(ApiError, match="mode fts needs the feature full_text_search"):
        run_sync(suite_for(tmp_path, replay, modes=["fts"]), tmp_path / "out", environ={})
    assert replay.calls("explore") == []


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(Canned({"detail": "Not Found"}, status=404), id="no-user_config"),
        pytest.param(Canned({"semantic_search": True, "captions_search": True}), id="enabled"),
        pytest.param(Canned({"labels_search": False}), id="other-feature-off"),
    ],
)
def test_features_allowed_or_unknown_let_the_run_go(
    replay: ReplayServer, tmp_path: Path, config: Canned
) -> None:
    replay.answer("user_config", config)
    result = run_sync(
        suite_for(tmp_path, replay, modes=["fts", "semantic"]), tmp_path / "o", environ={}
    )
    assert result.status == "complete" and result.exit_code == 0


def _semantic_forbidden(request: web.Request) -> Canned:
    if '"semantic"' in request.query.get("vql", ""):
        return Canned({"detail": "Semantic search is not enabled for this account"}, status=403)
    return Canned(DOCUMENTED_ANSWER)


def test_a_403_during_the_run_fails_only_its_mode(replay: ReplayServer, tmp_path: Path) -> None:
    replay.answer("explore", _semantic_forbidden)
    suite = suite_for(tmp_path, replay, modes=["fts", "semantic"])
    result = run_sync(suite, tmp_path / "out", environ={})
    assert result.status == "partial" and result.exit_code == 1
    assert result.message is not None
    (line,) = result.message.splitlines()
    assert line.startswith("mode semantic: 10 request(s) failed, refused by the API")
    assert "Semantic search is not enabled for this account" in line
    rows = request_rows(result.run_dir)
    fts, semantic = rows.filter(rows["mode"] == "fts"), rows.filter(rows["mode"] == "semantic")
    assert fts.height == len(QUERIES) and (fts["outcome"] == "ok").all()
    assert (semantic["http_status"] == 403).all() and (semantic["outcome"] == "http_error").all()
    assert all("Semantic search is not enabled" in e for e in semantic["error"])
    sent = [c for c in replay.calls("explore") if '"semantic"' in c.get("vql", "")]
    assert len(sent) < semantic.height  # after the first 403, the mode's requests are not sent
    assert read_manifest(result.run_dir)["status"] == "partial"


def test_cli_prints_a_line_per_refused_mode(replay: ReplayServer, tmp_path: Path) -> None:
    replay.answer("explore", _semantic_forbidden)
    suite = suite_for(tmp_path, replay, modes=["fts", "semantic"])
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path), "--no-report"])
    assert result.exit_code == 1, result.output
    assert "mode semantic: 10 request(s) failed, refused by the API" in result.output
    assert "Traceback" not in result.output


# -- enrichments: fts needs captions, not CAPTION_IMAGES ------------------------------------------

TAGGING_ONLY = {
    **CONTEXT_ALL,
    "dataset_enrichment_models": {"enrichment_models": {"IMAGE_TAGGING": "tagging-model"}},
}


def test_fts_runs_without_the_caption_enrichment(replay: ReplayServer, tmp_path: Path) -> None:
    replay.answer("context", Canned(TAGGING_ONLY))
    result = run_sync(suite_for(tmp_path, replay, modes=["fts"]), tmp_path / "out", environ={})
    assert result.status == "complete"


def test_caption_search_still_needs_the_caption_enrichment(
    replay: ReplayServer, tmp_path: Path
) -> None:
    replay.answer("context", Canned(TAGGING_ONLY))
    suite = suite_for(tmp_path, replay, modes=["fts", "caption"])
    with pytest.raises(ApiError, match=r"mode caption \(caption search\) needs CAPTION_IMAGES"):
        run_sync(suite, tmp_path / "out", environ={})
    assert replay.calls("explore") == []


# -- answer shapes --------------------------------------------------------------------------------


def _current_twin(legacy: dict[str, Any]) -> dict[str, Any]:
    """The legacy answer written in the current shape: what it must read as."""
    clusters = [
        {
            "cluster_id": c["id"],
            "type": c["entity_type"],
            "n_images": c["size"],
            "previews": [
                {
                    "media_id": m["id"],
                    "media_uri": m["preview"],
                    "file_name": m["filename"],
                    "caption": m["caption"],
                    "relevance_score": m["relevance_score"],
                }
                for m in c["media"]
            ],
        }
        for c in legacy["clusters"]
    ]
    return {"clusters": clusters, "total_pages": legacy["total_pages"]}


def test_the_legacy_answer_shape_gives_the_same_rows(replay: ReplayServer, tmp_path: Path) -> None:
    columns = ["query_id", "cluster_id", "cluster_size", "rank", "media_id", "file_name",
               "caption", "raw_score", "score"]  # fmt: skip
    rows = {}
    for name, body in [("legacy", LEGACY_ANSWER), ("current", _current_twin(LEGACY_ANSWER))]:
        replay.answer("explore", Canned(body))
        suite = suite_for(tmp_path, replay, name=f"shape-{name}", queries=list(ONE_QUERY))
        result = run_sync(suite, tmp_path / name, environ={})
        assert result.status == "complete" and result.exit_code == 0
        rows[name] = scan_hits(result.run_dir).select(columns).collect().sort("rank").rows()
    assert rows["legacy"] == rows["current"]
    assert [r[4] for r in rows["legacy"]] == ["m-sunset-1", "m-sunset-2"]
    assert rows["legacy"][0][5] == "sunset_beach_aerial.jpg"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            b"<html><body>" + b"upstream proxy error " * 20 + b"</body></html>", id="html"
        ),
        pytest.param(orjson.dumps({"results": [{"id": "x" * 300}], "page": 0}), id="other-json"),
        pytest.param(orjson.dumps({"clusters": [{"name": "y" * 300}]}), id="clusters-unread"),
    ],
)
def test_a_body_of_neither_shape_is_retried_then_failed_with_its_start(
    replay: ReplayServer, tmp_path: Path, body: bytes
) -> None:
    replay.answer("explore", Canned(body, headers={"X-Secret-Header": "header-value-never-shown"}))
    suite = suite_for(tmp_path, replay, queries=list(ONE_QUERY))
    result = run_sync(suite, tmp_path / "out", environ={})
    assert result.exit_code == 1
    (row,) = request_rows(result.run_dir).rows(named=True)
    assert row["outcome"] == "bad_body" and row["attempts"] == 3
    assert len(replay.calls("explore")) == 3
    start = body[:200].decode()
    assert start in row["error"] and body[:201].decode() not in row["error"]
    assert "header-value-never-shown" not in row["error"]


def test_dataset_answer_as_documented_is_read(replay: ReplayServer) -> None:
    async def read() -> Any:
        async with client_for(replay) as client:
            return await client.get_dataset()

    replay.answer("dataset", Canned(DATASET_READY))
    dataset = asyncio.run(read())
    assert (dataset.status, dataset.n_images, dataset.searchable) == ("READY", 3, True)


def test_retry_policy_is_the_one_of_the_scheduler() -> None:
    assert FAST_LIVE.job.retry == LiveOptions().retry
    assert isinstance(FAST_JOB.retry, RetryPolicy)


# -- bad input, from the command line: one clear line and the documented exit code ---------------


def test_cli_refuses_a_disabled_feature_in_one_line(replay: ReplayServer, tmp_path: Path) -> None:
    replay.answer("user_config", Canned({"semantic_search": False}))
    suite = suite_for(tmp_path, replay, modes=["fts", "semantic"])
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: the account cannot run this suite: mode semantic needs")
    assert "semantic_search" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
def test_cli_live_export_of_a_cancelled_job(
    replay: ReplayServer, tmp_path: Path, fallback: bool
) -> None:
    replay.answer("export_status", Canned({"status": "CANCELLED", "result_message": "by admin"}))
    suite = suite_for(tmp_path, replay, queries=list(ONE_QUERY))
    out = tmp_path / "ids.txt"
    args = ["export", "--live", str(suite), "-o", str(out), "-f", "txt", "--poll-interval", "0"]
    result = CliRunner().invoke(app, args + ([] if fallback else ["--no-fallback"]))
    assert "Traceback" not in result.output
    if fallback:
        assert result.exit_code == 0, result.output
        assert (
            "note: q1 (fts): export job task-1 CANCELED: by admin; paged through" in result.stderr
        )
        assert out.read_text().split() == ["300dad2c-1234-11f1-8483-5a879df30de4"]
    else:
        assert result.exit_code == 1, result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: export of query q1") and "CANCELED: by admin" in line
        assert not out.exists()
