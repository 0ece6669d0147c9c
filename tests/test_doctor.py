"""`vlbench doctor` and the contract checks: the local server passes; a changed contract is named.

A changed contract is made by a proxy on 127.0.0.1 in front of the real local server that
rewrites its answers the way a service might change them (a renamed field, a flipped score type).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import polars as pl
import pytest
from aiohttp import web

from runner.api.auth import DEMO_API_KEY, DEMO_API_SECRET, TokenSource
from runner.api.client import ExploreClient
from runner.api.contract import (
    check_answer_shape,
    check_cutoff_nesting,
    check_pagination,
    check_scores,
    findings_from_dicts,
    run_findings,
)
from runner.api.doctor import DoctorReport, diagnose
from runner.server.lifecycle import ServerThread

Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


# --- the checks on their own ---------------------------------------------------------------------


def test_a_documented_answer_has_the_expected_shape() -> None:
    body = {
        "clusters": [
            {
                "cluster_id": "c1",
                "n_images": 2,
                "relevance_score": 0.2,
                "relevance_score_type": "cosine_distance",
                "previews": [
                    {"media_id": "m", "relevance_score": 0.2, "relevance_score_type": "x"}
                ],
            }
        ]
    }
    assert check_answer_shape("fts", body).status == "ok"
    body["clusters"][0]["n_images"] = "2"
    finding = check_answer_shape("fts", body)
    assert finding.status == "changed"
    assert "`n_images` is str" in finding.evidence


def test_the_legacy_shape_and_a_missing_field_are_changes() -> None:
    legacy = {"clusters": [{"id": "c", "entity_type": "IMAGES", "size": 1, "media": []}]}
    assert "legacy" in check_answer_shape("fts", legacy).evidence
    renamed = {"clusters": [{"cluster_id": "c", "n_images": 1, "previews": []}]}
    finding = check_answer_shape("semantic", renamed)
    assert finding.status == "changed"
    assert "`relevance_score` is missing" in finding.evidence
    assert check_answer_shape("fts", {"detail": "x"}).status == "changed"


def test_scores_of_another_type_or_backwards_are_changes() -> None:
    assert check_scores("semantic", ["cosine_distance"], [[0.9, 0.8, 0.5]]).status == "ok"
    flipped = check_scores("semantic", ["cosine_similarity"], [[0.9, 0.8]])
    assert flipped.status == "changed"
    assert "cosine_similarity" in flipped.evidence
    # fts has no documented type: any type is fine while the order holds
    assert check_scores("fts", ["bm25"], [[5.0, 3.0], [2.0, 1.0]]).status == "ok"
    backwards = check_scores("fts", ["bm25"], [[1.0, 3.0], [2.0, 4.0], [3.0, 1.0]])
    assert backwards.status == "changed"
    assert "2 of 3" in backwards.evidence


def test_cutoffs_must_nest_the_documented_way() -> None:
    a, ab = frozenset({"a"}), frozenset({"a", "b"})
    assert check_cutoff_nesting("caption", {0.3: a, 0.6: ab}).status == "ok"
    reversed_ = check_cutoff_nesting("caption", {0.3: ab, 0.6: a})
    assert reversed_.status == "changed"
    assert "minimum similarity" in reversed_.evidence
    crossed = check_cutoff_nesting("caption", {0.3: frozenset({"c"}), 0.6: ab})
    assert crossed.status == "changed"
    assert check_cutoff_nesting("caption", {0.3: a}).status == "skipped"


def test_pagination_ends_with_an_empty_page() -> None:
    assert check_pagination("fts", 100, 0).status == "ok"
    assert check_pagination("fts", 100, 3).status == "changed"
    assert check_pagination("fts", 150, 0).status == "changed"


# --- the probes over real sockets ---------------------------------------------------------------


async def _diagnose(base_url: str, dataset_id: str, **kwargs: Any) -> DoctorReport:
    from runner.api.auth import DEMO_CREDENTIALS

    auth = TokenSource(credentials=DEMO_CREDENTIALS)
    async with ExploreClient(base_url, dataset_id, auth=auth) as client:
        return await diagnose(client, **kwargs)


async def test_the_local_server_passes(demo_server: ServerThread) -> None:
    report = await _diagnose(demo_server.base_url, demo_server.dataset_id)
    by_check = {f.check: f for f in report.findings}
    assert report.exit_code == 0, [f.line() for f in report.findings]
    for check in ("auth", "dataset", "scores:caption", "scores:fts", "scores:semantic"):
        assert by_check[check].status == "ok", by_check[check].line()
    assert by_check["cutoff:semantic"].status in ("ok", "skipped")
    assert by_check["pages:fts"].status == "ok"
    assert by_check["export"].status == "ok", by_check["export"].line()


@pytest.fixture
async def rewriting_proxy(
    demo_server: ServerThread,
) -> AsyncIterator[Callable[[Rewrite], str]]:
    """A proxy in front of the demo server whose explore answers pass through `rewrite`."""
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession()

    async def start(rewrite: Rewrite) -> str:
        async def forward(request: web.Request) -> web.Response:
            url = demo_server.base_url + request.path_qs
            headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
            async with session.get(url, headers=headers) as upstream:
                raw = await upstream.read()
                status = upstream.status
            if status == 200 and "/explore/" in request.path:
                raw = orjson.dumps(rewrite(orjson.loads(raw)))
            return web.Response(body=raw, status=status, content_type="application/json")

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()
    await session.close()


def _flip_score_type(body: dict[str, Any]) -> dict[str, Any]:
    for cluster in body.get("clusters", []):
        if cluster.get("relevance_score_type") == "cosine_distance":
            cluster["relevance_score_type"] = "cosine_similarity"
            for preview in cluster.get("previews") or []:
                preview["relevance_score_type"] = "cosine_similarity"
    return body


def _rename_cluster_id(body: dict[str, Any]) -> dict[str, Any]:
    for cluster in body.get("clusters", []):
        cluster["id"] = cluster.pop("cluster_id")
    return body


async def test_a_flipped_score_type_is_named(
    rewriting_proxy: Any, demo_server: ServerThread
) -> None:
    base_url = await rewriting_proxy(_flip_score_type)
    report = await _diagnose(base_url, demo_server.dataset_id, export=False)
    changed = {f.check: f.evidence for f in report.findings if f.status == "changed"}
    assert report.exit_code == 1
    assert "cosine_similarity" in changed["scores:semantic"]
    assert "cosine_similarity" in changed["scores:caption"]
    assert "scores:fts" not in changed


async def test_a_renamed_field_is_named(rewriting_proxy: Any, demo_server: ServerThread) -> None:
    base_url = await rewriting_proxy(_rename_cluster_id)
    report = await _diagnose(base_url, demo_server.dataset_id, export=False)
    changed = {f.check: f.evidence for f in report.findings if f.status == "changed"}
    assert report.exit_code == 1
    assert "`cluster_id` is missing" in changed["shape:fts"]


async def test_wrong_credentials_and_no_server_exit_2(demo_server: ServerThread) -> None:
    from runner.api.auth import Credentials

    bad = TokenSource(credentials=Credentials("nobody", "wrong-secret-0123456789"))
    async with ExploreClient(demo_server.base_url, demo_server.dataset_id, auth=bad) as client:
        report = await diagnose(client, export=False)
    assert report.exit_code == 2
    assert report.findings[0].check == "auth"
    assert "wrong-secret" not in " ".join(f.line() for f in report.findings)
    async with ExploreClient("http://127.0.0.1:9", "demo", timeout_s=2) as client:
        report = await diagnose(client, export=False)
    assert report.exit_code == 2
    assert report.findings[0].check == "reach"


def test_the_cli_prints_a_line_a_check_and_exits_by_verdict(demo_server: ServerThread) -> None:
    env = {
        **os.environ,
        "VL_API_KEY": DEMO_API_KEY,
        "VL_API_SECRET": DEMO_API_SECRET,
    }
    env.pop("VL_TOKEN", None)
    args = ["--base-url", demo_server.base_url, "--dataset", demo_server.dataset_id, "--no-export"]
    done = subprocess.run(
        [sys.executable, "-m", "runner", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("ok") and "scores:semantic" in line for line in lines)
    assert lines[-1] == "doctor: as expected"
    assert DEMO_API_SECRET not in done.stdout + done.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "runner", "doctor", "--base-url", demo_server.base_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert usage.returncode == 2
    assert "--dataset" in usage.stderr


# --- a run keeps its own findings ---------------------------------------------------------------


def test_run_findings_read_a_flipped_order_from_stored_rows() -> None:
    requests = pl.DataFrame(
        {
            "request_key": ["r1", "r2"],
            "mode": ["fts", "fts"],
            "page": [0, 0],
            "outcome": ["ok", "bad_body"],
            "clusters": [3, 0],
            "error": [None, "clusters[0]: no cluster_id"],
        }
    )
    hits = pl.DataFrame(
        {
            "request_key": ["r1"] * 3,
            "query_id": ["q"] * 3,
            "mode": ["fts"] * 3,
            "entity_type": ["IMAGES"] * 3,
            "threshold": [0] * 3,
            "labels_filter": [None, None, None],
            "cutoff": [None, None, None],
            "cluster_rank": [1, 2, 3],
            "preview_rank": [1, 1, 1],
            "media_id": ["a", "b", "c"],
            "score": [1.0, 2.0, 3.0],
            "score_type": ["bm25"] * 3,
        },
        schema_overrides={"labels_filter": pl.List(pl.String), "cutoff": pl.Float64},
    )
    found = {f.check: f for f in run_findings(requests, hits)}
    assert found["scores:fts"].status == "changed"
    assert found["shape:fts"].status == "changed"
    assert "no cluster_id" in found["shape:fts"].evidence
    stored = [f.to_dict() for f in found.values()]
    assert findings_from_dicts(stored) == list(found.values())


def test_a_demo_run_records_its_contract_in_the_manifest(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: contract\nrate_limit: 100/s\nmodes: [caption, fts, semantic]\n"
        "sweep: {semantic_threshold: [0.3, 0.45]}\npagination: {max_pages: 20}\n"
        "queries: [{id: q1, text: a dog on a skateboard}, {id: q2, text: a red bus}]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(suite), "--out", str(tmp_path), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    manifest = next(tmp_path.rglob("manifest.json"))
    findings = findings_from_dicts(orjson.loads(manifest.read_bytes())["api_contract"])
    by_check = {f.check: f.status for f in findings}
    assert by_check["scores:semantic"] == "ok"
    assert by_check["cutoff:semantic"] == "ok"
    assert by_check["shape:fts"] == "ok"
    assert all(f.status == "ok" for f in findings), findings


# --- the local server with its contract changed on purpose (`vlbench serve --fault contract=`) ---


@pytest.mark.parametrize(
    ("change", "check", "evidence"),
    [
        ("score-type-flip", "scores:semantic", "cosine_similarity"),
        ("rename-field", "shape:fts", "`relevance_score` is missing"),
        ("score-as-string", "shape:caption", "`relevance_score` is str"),
        ("legacy-shape", "shape:fts", "legacy"),
    ],
)
async def test_a_server_with_a_changed_contract_is_named(
    start_server: Any, change: str, check: str, evidence: str
) -> None:
    server = start_server(contract_changes=frozenset({change}))
    report = await _diagnose(server.base_url, server.dataset_id, export=False)
    changed = {f.check: f.evidence for f in report.findings if f.status == "changed"}
    assert report.exit_code == 1, [f.line() for f in report.findings]
    assert evidence in changed[check]


async def test_a_disabled_feature_is_shown_and_skips_its_mode(start_server: Any) -> None:
    server = start_server(disabled_features=frozenset({"semantic_search"}))
    report = await _diagnose(server.base_url, server.dataset_id, export=False)
    by_check = {f.check: f for f in report.findings}
    assert report.exit_code == 0, [f.line() for f in report.findings]
    assert "semantic_search" in by_check["features"].evidence
    assert by_check["shape:semantic"].status == "skipped"
    assert by_check["scores:fts"].status == "ok"


async def test_an_export_fault_fails_the_export_check(start_server: Any) -> None:
    server = start_server(export_fault="rejected")
    report = await _diagnose(server.base_url, server.dataset_id)
    export = next(f for f in report.findings if f.check == "export")
    assert export.status == "failed"
    assert "REJECTED" in export.evidence


def _run_and_report(tmp_path: Path, base_url: str, dataset_id: str) -> dict[str, Any]:
    tmp_path.mkdir()
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"name: contract\nbase_url: {base_url}\ndataset_id: {dataset_id}\nrate_limit: 100/s\n"
        "modes: [caption, fts, semantic]\n"
        "queries: [{id: q1, text: a dog on a skateboard}, {id: q2, text: a red bus}]\n"
    )
    env = {**os.environ, "VL_API_KEY": DEMO_API_KEY, "VL_API_SECRET": DEMO_API_SECRET}
    env.pop("VL_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(suite), "--out", str(tmp_path), "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    run_dir = next(tmp_path.rglob("manifest.json")).parent
    summary: dict[str, Any] = orjson.loads((run_dir / "summary.json").read_bytes())
    summary["_html"] = (run_dir / "report.html").read_text()
    return summary


def test_the_report_tells_a_changed_api_from_a_changed_search(
    tmp_path: Path, start_server: Any
) -> None:
    flipped = start_server(contract_changes=frozenset({"score-type-flip"}))
    changed = _run_and_report(tmp_path / "flipped", flipped.base_url, flipped.dataset_id)
    assert changed["api_contract"]["changed"] is True
    assert "API changed" in changed["_html"]
    assert "cosine_similarity" in changed["_html"]
    plain = start_server()
    same = _run_and_report(tmp_path / "plain", plain.base_url, plain.dataset_id)
    assert same["api_contract"]["changed"] is False
    assert "API as expected" in same["_html"]


async def test_full_text_search_turned_off_skips_fts_alone(start_server: Any) -> None:
    server = start_server(disabled_features=frozenset({"full_text_search"}))
    report = await _diagnose(server.base_url, server.dataset_id, export=False)
    by_check = {f.check: f for f in report.findings}
    assert by_check["shape:fts"].status == "skipped"
    assert "full_text_search" in by_check["shape:fts"].evidence
    assert by_check["scores:caption"].status == "ok"  # captions_search is still on
