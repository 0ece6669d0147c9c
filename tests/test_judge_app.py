"""`vlbench judge` over real sockets: the JSON endpoints, their 4xx, raters, and the command."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from run_builder import build_run, hit, judgment, request
from typer.testing import CliRunner

from runner.cli import app
from runner.judge.app import CSP, JudgeThread
from runner.judge.labels import read_log, standing_labels, store_dir
from runner.judge.session import _thumb, image_origin, open_session

VLBENCH = str(Path(sys.executable).parent / "vlbench")
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)


def _run(tmp_path: Path) -> Path:
    hits = [hit("q1", f"m{i}", caption=f"caption {i}") for i in range(1, 5)]
    hits += [hit("q1", "m2", mode="fts"), hit("q1", "m4", mode="fts")]
    hits += [hit("q2", f"n{i}") for i in range(1, 3)]
    return build_run(tmp_path, hits=hits, judgments=[judgment("q1", "m1", 2)])


def _call(url: str, body: Any = None, *, content_type: str = "application/json") -> Any:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def judge_url(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    run = _run(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    (images / "m3.jpg").write_bytes(PNG)  # one hit has its image on disk
    with JudgeThread(open_session(run, rater="ana", k=5, images=images)) as url:
        yield url, run


def test_state_lists_the_unjudged_top_k_with_ranks_per_mode(judge_url: tuple[str, Path]) -> None:
    url, _ = judge_url
    status, state = _call(url + "api/state")
    assert status == 200 and state["rater"] == "ana" and (state["done"], state["total"]) == (0, 5)
    q1 = state["queries"][0]
    assert q1["query_id"] == "q1" and q1["text"] == "text of q1"
    items = {i["media_id"]: i for i in q1["items"]}
    assert set(items) == {"m2", "m3", "m4"}  # m1 is judged by the suite
    assert items["m2"]["ranks"] == {"fts": 1, "semantic": 2}
    assert [i["media_id"] for i in q1["items"]] == ["m2", "m4", "m3"]  # by best rank
    assert items["m3"]["thumb"] == "/thumb/2" and items["m2"]["thumb"] is None
    with urllib.request.urlopen(url + "thumb/2", timeout=30) as response:
        assert response.read() == PNG
    assert _call(url + "thumb/0") == (404, {"error": "index: item 0 has no local thumbnail"})
    assert _call(url + "thumb/99")[0] == 404
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Security-Policy"] == CSP


def test_grades_are_in_the_log_before_the_answer(judge_url: tuple[str, Path]) -> None:
    url, run = judge_url
    status, answer = _call(url + "api/grade", {"query_id": "q1", "media_id": "m3", "grade": 3})
    assert status == 200 and answer["done"] == 1
    assert standing_labels(read_log(store_dir(run))).rows() == [("ana", "q1", "m3", 3)]
    status, answer = _call(url + "api/undo", {})
    assert status == 200 and (answer["media_id"], answer["grade"], answer["done"]) == (
        "m3",
        None,
        0,
    )
    assert standing_labels(read_log(store_dir(run))).is_empty()
    assert _call(url + "api/undo", {}) == (409, {"error": "undo: nothing to undo"})


@pytest.mark.parametrize(
    "body, parameter",
    [
        pytest.param({"query_id": "q1", "media_id": "m3", "grade": 4}, "grade", id="grade-4"),
        pytest.param({"query_id": "q1", "media_id": "m3", "grade": "2"}, "grade", id="grade-text"),
        pytest.param({"query_id": "q1", "media_id": "m3"}, "grade", id="grade-missing"),
        pytest.param({"query_id": "q1", "media_id": "m1", "grade": 1}, "media_id", id="judged"),
        pytest.param({"query_id": "qX", "media_id": "m3", "grade": 1}, "query_id", id="query"),
        pytest.param(b"{not json", "body", id="not-json"),
        pytest.param([1, 2], "body", id="not-object"),
    ],
)
def test_bad_grades_answer_400_naming_the_parameter(
    judge_url: tuple[str, Path], body: Any, parameter: str
) -> None:
    url, run = judge_url
    status, answer = _call(url + "api/grade", body)
    assert status == 400 and answer["error"].startswith(f"{parameter}: ")
    assert read_log(store_dir(run)).is_empty()


def test_a_form_post_from_another_site_is_refused(judge_url: tuple[str, Path]) -> None:
    url, run = judge_url
    body = b"query_id=q1&media_id=m3&grade=0"
    status, answer = _call(
        url + "api/grade", body, content_type="application/x-www-form-urlencoded"
    )
    assert status == 400 and answer["error"].startswith("Content-Type: ")
    assert read_log(store_dir(run)).is_empty()


def test_another_host_name_is_refused(judge_url: tuple[str, Path]) -> None:
    url, _ = judge_url
    port = url.rstrip("/").rsplit(":", 1)[1]
    req = urllib.request.Request(url + "api/state", headers={"Host": f"evil.example:{port}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=30)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"].startswith("Host: 'evil.example:")
    caught.value.close()
    local = urllib.request.Request(url + "api/state", headers={"Host": f"localhost:{port}"})
    with urllib.request.urlopen(local, timeout=30) as response:
        assert response.status == 200


def test_thumbnails_come_from_the_runs_media_thumb_uri(tmp_path: Path) -> None:
    run = _run(tmp_path)
    image = tmp_path / "m4 thumb.png"
    image.write_bytes(PNG)
    hits = pq.read_table(run / "hits.parquet")
    data = "data:image/png;base64," + base64.b64encode(PNG).decode()
    uris = {
        "m2": "https://cdn.example.com/m2/thumb.webp",
        "m3": data,
        "m4": image.as_uri(),
        "n1": "http://127.0.0.1:9/n1.jpg",
        "n2": "https://evil.example; script-src *",  # not an origin: never reaches the policy
    }
    column = pa.array([uris.get(m) for m in hits["media_id"].to_pylist()], pa.string())
    index = hits.schema.get_field_index("media_thumb_uri")
    pq.write_table(hits.set_column(index, "media_thumb_uri", column), run / "hits.parquet")
    with JudgeThread(open_session(run, rater="ana", k=5)) as url:
        _, state = _call(url + "api/state")
        thumbs = {i["media_id"]: i["thumb"] for q in state["queries"] for i in q["items"]}
        assert thumbs == {
            "m2": uris["m2"],
            "m3": data,
            "m4": "/thumb/1",
            "n1": uris["n1"],
            "n2": None,
        }
        with urllib.request.urlopen(url + "thumb/1", timeout=30) as response:
            assert response.read() == PNG
        with urllib.request.urlopen(url, timeout=30) as response:
            policy = response.headers["Content-Security-Policy"]
    # Exactly the thumbnails' origins, beside this server and data: images.
    assert "img-src 'self' data: http://127.0.0.1:9 https://cdn.example.com;" in policy
    assert policy.replace(" http://127.0.0.1:9 https://cdn.example.com", "") == CSP
    assert "evil" not in policy and "http: " not in policy


def test_image_origins_fit_for_a_policy() -> None:
    assert image_origin("https://cdn.example.com/a/b.webp?x=1") == "https://cdn.example.com"
    assert image_origin("http://[::1]:8080/x.png") == "http://[::1]:8080"
    for bad in ("https://a b.com/x", "https://u:p@cdn.example.com/x", "ftp://x.com/y", "x.jpg"):
        assert image_origin(bad) is None, bad
    # data: URIs are shown when they are images only.
    assert _thumb("data:image/png;base64,iVBO", None, None) == "data:image/png;base64,iVBO"
    assert _thumb("data:text/html;base64,PHA+", None, None) is None
    assert _thumb("data:image/svg+xml,<svg onload=x>", None, None) is None


def test_raters_split_the_work_and_overlap_hides_grades(tmp_path: Path) -> None:
    run = _run(tmp_path)
    ana = open_session(run, rater="ana", k=5)
    ana.grade("q1", "m2", 2)
    ana.grade("q2", "n1", 0)
    bo = open_session(run, rater="bo", k=5)  # without --overlap: what nobody graded yet
    assert {(i.query_id, i.media_id) for i in bo.items} == {
        ("q1", "m3"),
        ("q1", "m4"),
        ("q2", "n2"),
    }
    bo_overlap = open_session(run, rater="bo", k=5, overlap=True)
    with JudgeThread(bo_overlap) as url:
        _, state = _call(url + "api/state")
    shown = {
        (q["query_id"], i["media_id"]): i["grade"] for q in state["queries"] for i in q["items"]
    }
    assert shown == {("q1", "m2"): None, ("q2", "n1"): None}  # ana's hits, not her grades
    again = open_session(run, rater="ana", k=5)  # ana resumes: her grades, all her hits
    assert again.progress() == (2, 5)
    assert again.grades() == {("q1", "m2"): 2, ("q2", "n1"): 0}


# --- the command --------------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["judge", *args])


def test_the_command_refuses_a_rater_name_with_a_path(tmp_path: Path) -> None:
    result = _cli(str(_run(tmp_path)), "--rater", "../../etc/passwd")
    assert (
        result.exit_code == 2 and "--rater: '../../etc/passwd' is not a rater name" in result.stderr
    )
    assert not store_dir(tmp_path / "suite=test/run_date=2024-01-01/run_id=test-run").exists()


def test_the_command_refuses_a_run_without_hits(tmp_path: Path) -> None:
    run = build_run(tmp_path, requests=[request("q1")], run_id="empty")
    result = _cli(str(run), "--rater", "ana")
    assert result.exit_code == 2 and "the run has no hits: nothing to judge" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--k", "0"], "--k: 0 is not a depth", id="k"),
        pytest.param(["--port", "70000"], "--port: 70000 is not a port", id="port"),
        pytest.param(["--images", "/nonexistent"], "--images: /nonexistent is not a dir", id="img"),
    ],
)
def test_the_command_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = _cli(str(_run(tmp_path)), "--rater", "ana", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_nothing_to_overlap_is_said_and_is_no_error(tmp_path: Path) -> None:
    result = _cli(str(_run(tmp_path)), "--rater", "bo", "--overlap")
    assert result.exit_code == 0
    assert "nothing to judge: no hit in the top 10 is graded by another rater" in result.stderr


def test_the_command_refuses_an_unknown_run(tmp_path: Path) -> None:
    result = _cli(str(tmp_path / "nope"), "--rater", "ana")
    assert result.exit_code == 2 and str(tmp_path / "nope") in result.stderr


@contextlib.contextmanager
def _judging(run: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`vlbench judge` (the console script) on a free port: the process and its URL."""
    with subprocess.Popen(
        [VLBENCH, "judge", str(run), "--rater", "ana", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), process.stderr.read()
            yield process, url
        finally:
            process.kill()
            process.wait(timeout=30)


def test_ctrl_c_closes_the_page_and_compacts_a_kill_loses_nothing_given(tmp_path: Path) -> None:
    run = _run(tmp_path)
    store = store_dir(run)
    with _judging(run) as (process, url):
        assert _call(url + "api/grade", {"query_id": "q1", "media_id": "m2", "grade": 1})[0] == 200
        process.send_signal(signal.SIGKILL)  # a crash: nothing compacted
        process.wait(timeout=30)
    assert not (store / "labels.parquet").exists()
    assert standing_labels(read_log(store)).rows() == [("ana", "q1", "m2", 1)]
    with _judging(run) as (process, url):
        _, state = _call(url + "api/state")
        assert state["done"] == 1  # resumed
        assert _call(url + "api/grade", {"query_id": "q1", "media_id": "m3", "grade": 0})[0] == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert (store / "qrels" / "ana.qrels").read_text() == "q1 0 m2 1\nq1 0 m3 0\n"
    assert (store / "labels.parquet").exists()
