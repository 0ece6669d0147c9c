"""Thumbnails end to end: a run stores `media_thumb_uri`, the judging page shows it or falls back.

Runs go against the local server over 127.0.0.1 (its thumbnail is the item's `media_uri`). A
thumbnail that cannot load (here: an http URL on a port nothing listens on, as offline) shows the
hit's caption and file name in headless Chromium; a data: thumbnail shows with no network.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers_exec import run_sync, write_suite
from helpers_server import StartServer, import_small_dataset
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from test_browser_report import driver  # noqa: F401  (the fixture)
from test_judge_browser import PNG, _open

from runner.judge.app import JudgeThread
from runner.judge.session import open_session
from runner.server.lifecycle import ServerThread
from runner.store import scan_hits

DATA_THUMB = "data:image/png;base64," + base64.b64encode(PNG).decode()
GONE = "http://127.0.0.1:9"  # the discard port: nothing answers there


def _small_run(tmp_path: Path, start_server: StartServer) -> Path:
    """A run of a five-image dataset: img0's thumbnail is a data: URI, the others' are gone."""
    rows = [
        {
            "file_name": f"img{i}.jpg",
            "caption": f"a dog number {i} on the beach",
            "media_uri": DATA_THUMB if i == 0 else f"{GONE}/img{i}.jpg",
        }
        for i in range(5)
    ]
    import_small_dataset(tmp_path, "thumbs", rows)
    server = start_server(dataset_dir=tmp_path / "thumbs")
    suite = write_suite(tmp_path, server, queries=[{"id": "dogs", "text": "dog beach"}])
    result = run_sync(suite, tmp_path / "reports")
    assert result.status == "complete"
    return result.run_dir


def _state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "api/state", timeout=30) as response:
        state: dict[str, Any] = json.loads(response.read())
    return state


def test_a_run_against_the_local_server_stores_the_thumbnails(
    demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, demo_server, queries=[{"id": "dogs", "text": "a dog"}])
    run = run_sync(suite, tmp_path / "reports").run_dir
    hits = scan_hits(run).collect()
    assert hits.height > 0 and hits["media_thumb_uri"].null_count() == 0
    # The demo server's thumbnail is the image's COCO URL, named by its file name.
    expected = "http://images.cocodataset.org/val2017/" + hits["file_name"]
    assert (hits["media_thumb_uri"] == expected).all()


def test_the_judging_state_carries_the_stored_thumbnail(
    start_server: StartServer, tmp_path: Path
) -> None:
    run = _small_run(tmp_path, start_server)
    stored = dict(
        scan_hits(run).select("media_id", "media_thumb_uri").unique().collect().iter_rows()
    )
    assert sorted(stored.values()) == sorted(
        [DATA_THUMB, *(f"{GONE}/img{i}.jpg" for i in (1, 2, 3, 4))]
    )
    with JudgeThread(open_session(run, rater="ana", k=5)) as url:
        (query,) = _state(url)["queries"]
        assert {i["media_id"]: i["thumb"] for i in query["items"]} == stored
        with urllib.request.urlopen(url, timeout=30) as response:
            policy = response.headers["Content-Security-Policy"]
    assert f"img-src 'self' data: {GONE};" in policy


@pytest.mark.browser
def test_a_thumbnail_that_cannot_load_shows_caption_and_file_name(
    driver: WebDriver,  # noqa: F811  (the fixture imported above)
    start_server: StartServer,
    tmp_path: Path,
) -> None:
    run = _small_run(tmp_path, start_server)
    names = dict(scan_hits(run).select("media_id", "file_name").unique().collect().iter_rows())
    with JudgeThread(open_session(run, rater="ana", k=5)) as url:
        _open(driver, url)
        # Every failed image has been replaced by its caption (the error event has fired).
        WebDriverWait(driver, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card img")) == 1
        )
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        assert len(cards) == 5
        for card in cards:
            media = str(card.get_attribute("data-media"))
            name = names[media]
            if name == "img0.jpg":  # the data: thumbnail shows, with no network
                width = driver.execute_script(
                    "return arguments[0].querySelector('img').naturalWidth", card
                )
                assert width == 1
                continue
            assert card.find_elements(By.TAG_NAME, "img") == []
            text = card.text
            number = name.removeprefix("img").removesuffix(".jpg")
            assert f"a dog number {number} on the beach" in text and name in text
