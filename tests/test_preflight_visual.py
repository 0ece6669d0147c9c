"""Preflight for visual search (`via: anchor`), against the local server over 127.0.0.1.

A suite asking for visual search is refused before any search when the dataset lacks the image
embeddings it ranks by (MULTIMODEL_IMAGE_ENCODING) or when `user_config` turns `visual_search` off,
naming the mode and what is missing; the other modes' needs are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_exec import DEMO_ENV, request_rows, run_sync, write_suite
from helpers_server import StartServer
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import ApiError
from runner.execute._preflight import required_enrichments, required_features
from runner.plan import expand
from runner.server.lifecycle import ServerThread
from runner.suite import load_suite

ANCHOR = "2963ac44-2bb0-510a-b047-0920d1538884"  # demo image 30494 (a dog and a frisbee)
QUERIES = [{"id": "dog-frisbee", "anchor": ANCHOR}, {"id": "dogs", "text": "a dog on the beach"}]


def _suite(tmp_path: Path, server: ServerThread | None, modes: list[str]) -> Path:
    queries = [q for q in QUERIES if ("anchor" in q) == ("visual" in modes) or len(modes) > 1]
    return write_suite(tmp_path, server, queries=queries, modes=modes, pagination={"max_pages": 1})


def test_the_plan_of_a_visual_mode_needs_image_embeddings_and_the_feature(tmp_path: Path) -> None:
    suite = load_suite(_suite(tmp_path, None, ["visual"]))
    specs = expand(suite).specs
    assert required_enrichments(specs) == {
        "mode visual (visual search)": ("MULTIMODEL_IMAGE_ENCODING",)
    }
    assert required_features(specs) == {"mode visual": ("visual_search",)}


def test_the_demo_dataset_serves_visual_search(demo_server: ServerThread, tmp_path: Path) -> None:
    result = run_sync(_suite(tmp_path, demo_server, ["fts", "visual"]), tmp_path / "out")
    assert result.status == "complete"
    visual = request_rows(result.run_dir).filter(mode="visual")
    assert visual.height == 1 and visual["outcome"].to_list() == ["ok"]


def test_a_dataset_without_image_embeddings_refuses_visual_search(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(hidden_enrichments=frozenset({"MULTIMODEL_IMAGE_ENCODING"}))
    suite = _suite(tmp_path, server, ["fts", "visual"])
    with pytest.raises(ApiError) as caught:
        run_sync(suite, tmp_path / "out")
    message = str(caught.value)
    assert caught.value.status == 409
    assert "mode visual (visual search) needs MULTIMODEL_IMAGE_ENCODING" in message
    assert "fts" not in message.split("(its enrichments")[0]  # fts needs no enrichment
    assert not (tmp_path / "out").exists()  # nothing sent, nothing stored
    # Without the visual mode the same dataset runs the rest.
    result = run_sync(_suite(tmp_path, server, ["fts"]), tmp_path / "out2")
    assert result.status == "complete"


def test_a_disabled_visual_search_refuses_the_mode(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(disabled_features=frozenset({"visual_search"}))
    with pytest.raises(ApiError, match="mode visual needs the feature visual_search") as caught:
        run_sync(_suite(tmp_path, server, ["fts", "visual"]), tmp_path / "out")
    assert caught.value.status == 403
    assert "mode fts" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_visual_search_on_while_another_feature_is_off(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(disabled_features=frozenset({"semantic_search"}))
    result = run_sync(_suite(tmp_path, server, ["visual"]), tmp_path / "out")
    assert result.status == "complete"


def test_cli_refuses_visual_search_in_one_line(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(disabled_features=frozenset({"visual_search"}))
    suite = _suite(tmp_path, server, ["visual"])
    result = CliRunner().invoke(
        app, ["run", str(suite), "--out", str(tmp_path / "out")], env=dict(DEMO_ENV)
    )
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: the account cannot run this suite: mode visual needs")
    assert "visual_search" in line and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
