"""`vlbench export --live SUITE` against the local server: export jobs, fallbacks, failures."""

from __future__ import annotations

import asyncio
import contextlib
import io
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from aiohttp import web
from helpers_exec import DEMO_ENV, run_sync, write_suite
from helpers_server import StartServer
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import ExportError
from runner.export.live import LiveExportResult, LiveOptions, live_export
from runner.server.lifecycle import ServerThread
from runner.store import scan_hits
from runner.suite import load_suite

# Few words each: fts ORs the terms, so a query of common words would match everything.
QUERIES = (
    {"id": "dog-beach", "text": "dog beach"},
    {"id": "red-bicycle", "text": "red bicycle"},
    {"id": "pizza", "text": "pizza oven"},
)
FAST = LiveOptions(poll_interval_s=0.01, max_wait_s=30.0)


def _suite(tmp_path: Path, server: ServerThread, **settings: Any) -> Path:
    fields: dict[str, Any] = {
        "modes": ["fts", "semantic"],
        "sweep": {"semantic_threshold": [0.6]},
        "pagination": {"max_pages": "all"},
    }
    fields.update(settings)
    fields.setdefault("queries", QUERIES)
    return write_suite(tmp_path, server, name="live", **fields)


def _live(suite: Path, out: Path, options: LiveOptions = FAST, **kwargs: Any) -> LiveExportResult:
    return asyncio.run(
        live_export(
            load_suite(suite), out, fmt="parquet", options=options, environ=DEMO_ENV, **kwargs
        )
    )


def _ids_by_query_mode(frame: pl.DataFrame) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for query_id, mode, media_id in frame.select("query_id", "mode", "media_id").iter_rows():
        out.setdefault((query_id, mode), set()).add(media_id)
    return out


def _paged_ids(suite: Path, root: Path) -> dict[tuple[str, str], set[str]]:
    """Every (query, mode)'s IDs by full pagination with `vlbench run` (EXEC's executor)."""
    result = run_sync(suite, root)
    assert result.status == "complete"
    return _ids_by_query_mode(scan_hits(result.run_dir).collect())


def test_export_job_ids_equal_full_pagination_ids(
    demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = _suite(tmp_path, demo_server)
    out = tmp_path / "ids.parquet"
    result = _live(
        suite, out, LiveOptions(poll_interval_s=0.01, verify=True), group_by="query-mode"
    )
    assert {o.method for o in result.outcomes} == {"export_job"}
    assert result.differences == ()
    assert all(o.only_export == 0 and o.only_pagination == 0 for o in result.outcomes)
    exported = _ids_by_query_mode(pl.read_parquet(out))
    paged = _paged_ids(suite, tmp_path / "runs")
    assert exported == paged
    assert {mode for _, mode in exported} == {"fts", "semantic"}
    assert all(ids for ids in exported.values())
    manifest = orjson.loads(Path(f"{out}.manifest.json").read_bytes())
    assert manifest["verify"] is True and manifest["requests_differing"] == 0
    assert len(manifest["requests"]) == len(QUERIES) * 2
    assert all(r["entities_count"] == r["n_ids"] for r in manifest["requests"])


def test_caption_mode_is_paged_through(demo_server: ServerThread, tmp_path: Path) -> None:
    suite = _suite(tmp_path, demo_server, modes=["caption"], sweep={})
    result = _live(suite, tmp_path / "ids.parquet", group_by="query-mode")
    assert {o.method for o in result.outcomes} == {"pagination"}
    assert all(o.note is None for o in result.outcomes)
    exported = _ids_by_query_mode(pl.read_parquet(tmp_path / "ids.parquet"))
    assert exported == _paged_ids(suite, tmp_path / "runs")


def test_rejected_job_falls_back_to_pagination_with_a_note(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(export_max_entities=5)
    suite = _suite(tmp_path, server)
    out = tmp_path / "ids.parquet"
    result = _live(suite, out, group_by="query-mode")
    rejected = [o for o in result.outcomes if o.job_status == "REJECTED"]
    assert rejected, "some query matches more than 5 images"
    for outcome in rejected:
        assert outcome.method == "pagination"
        assert outcome.note is not None
        assert "REJECTED" in outcome.note and "exceeds the maximum of 5" in outcome.note
        assert outcome.n_ids == outcome.entities_count
    assert all(
        o.entities_count is not None and o.entities_count <= 5
        for o in result.outcomes
        if o.method == "export_job"
    )
    assert _ids_by_query_mode(pl.read_parquet(out)) == _paged_ids(suite, tmp_path / "runs")


def test_rejected_job_without_fallback_is_an_error(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(export_max_entities=5)
    suite = _suite(tmp_path, server, modes=["fts"])
    out = tmp_path / "ids.csv"
    result = CliRunner().invoke(
        app,
        [
            "export",
            "--live",
            str(suite),
            "-o",
            str(out),
            "--no-fallback",
            "--poll-interval",
            "0.01",
        ],
        env=DEMO_ENV,
    )
    assert result.exit_code == 1
    assert "REJECTED" in result.output and "exceeds the maximum of 5" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.yaml"]


def test_failed_job_is_a_clear_error_and_writes_nothing(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(export_fault="failed")
    suite = _suite(tmp_path, server, modes=["fts"])
    with pytest.raises(
        ExportError,
        match=r"query (dog-beach|red-bicycle|pizza) .*FAILED: .*injected export failure",
    ):
        _live(suite, tmp_path / "ids.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.yaml"]


def test_a_job_that_never_finishes_times_out(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(export_delay_ms=10_000)
    suite = _suite(tmp_path, server, modes=["fts"], queries=QUERIES[:1])
    options = LiveOptions(poll_interval_s=0.01, max_wait_s=0.2)
    with pytest.raises(ExportError, match=r"did not finish within 0.2 s \(last status IN_PROGRESS"):
        _live(suite, tmp_path / "ids.parquet", options)
    assert not (tmp_path / "ids.parquet").exists()


def test_cli_live_writes_ids_and_manifest(demo_server: ServerThread, tmp_path: Path) -> None:
    suite = _suite(tmp_path, demo_server, modes=["fts"])
    out = tmp_path / "ids.txt"
    result = CliRunner().invoke(
        app,
        ["export", "--live", str(suite), "-o", str(out), "--poll-interval", "0.01"],
        env=DEMO_ENV,
    )
    assert result.exit_code == 0, result.output
    manifest = orjson.loads(Path(f"{out}.manifest.json").read_bytes())
    assert [r["method"] for r in manifest["requests"]] == ["export_job"] * len(QUERIES)
    ids = out.read_text().splitlines()
    assert len(ids) == len(set(ids)) == manifest["rows"] > 0
    assert "token" not in Path(f"{out}.manifest.json").read_text().lower()


# -- edge cases the local server cannot produce: a scripted API and a storage host on loopback ----

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def _scripted(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{app_runner.addresses[0][1]}"
    finally:
        await app_runner.cleanup()


def _scripted_suite(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "scripted.yaml"
    suite = {
        "name": "scripted",
        "base_url": base_url,
        "dataset_id": "ds",
        "rate_limit": 1000,
        "modes": ["fts"],
        "queries": [{"id": "q1", "text": "dog"}],
    }
    path.write_text(orjson.dumps(suite).decode(), encoding="utf-8")
    return path


def _zip_json(rows: list[dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("export/metadata.json", orjson.dumps(rows))
    return buffer.getvalue()


async def test_export_endpoint_missing_falls_back_to_pagination(tmp_path: Path) -> None:
    async def api(request: web.Request) -> web.Response:
        if request.path.endswith("/export_context_async"):
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.json_response({"clusters": []})  # an empty first page: no matches

    async with _scripted(api) as base_url:
        result = await live_export(
            load_suite(_scripted_suite(tmp_path, base_url)),
            tmp_path / "ids.csv",
            options=FAST,
            environ=DEMO_ENV,
        )
    (outcome,) = result.outcomes
    assert outcome.method == "pagination"
    assert outcome.note is not None and "not available (HTTP 404)" in outcome.note
    assert result.rows == 0


async def test_download_redirected_to_storage_gets_no_token(tmp_path: Path) -> None:
    seen: list[tuple[str, str, str | None]] = []
    rows = [{"media_id": "m1", "file_name": "a.jpg"}, {"media_id": "m2", "file_name": "b.jpg"}]

    async def storage(request: web.Request) -> web.Response:
        seen.append(("storage", request.path, request.headers.get("Authorization")))
        return web.Response(body=_zip_json(rows), content_type="application/zip")

    async with _scripted(storage) as storage_url:

        async def api(request: web.Request) -> web.Response:
            seen.append(("api", request.path, request.headers.get("Authorization")))
            if request.path.endswith("/export_context_async"):
                return web.json_response({"id": "t1", "status": "INIT", "entities_count": 2})
            if request.path.endswith("/export_status"):
                status = {"status": "COMPLETED", "download_uri": "/files/t1.zip"}
                return web.json_response(status)
            raise web.HTTPFound(f"{storage_url}/bucket/t1.zip?signature=abc")

        async with _scripted(api) as base_url:
            result = await live_export(
                load_suite(_scripted_suite(tmp_path, base_url)),
                tmp_path / "ids.txt",
                fmt="txt",
                options=FAST,
                environ=DEMO_ENV,
            )
    assert (tmp_path / "ids.txt").read_text().splitlines() == ["m1", "m2"]
    assert result.outcomes[0].n_ids == 2
    api_calls = [s for s in seen if s[0] == "api"]
    assert [p for _, p, _ in api_calls][-1] == "/files/t1.zip"  # relative URI joined to base
    assert all(auth is not None and auth.startswith("Bearer ") for _, _, auth in api_calls)
    assert [(where, auth) for where, _, auth in seen if where == "storage"] == [("storage", None)]
