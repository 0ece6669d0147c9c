"""The judging page in headless Chromium: keys grade, reload resumes, two raters, qrels as typed.

VLBENCH_SCREENSHOT_RUN=<run dir> saves reports/screenshots/judge.png of that run's page (the
README's is of a `make demo` run, graded into a scratch store); VLBENCH_SCREENSHOTS=1 saves
judge-report.png, the report's raters section.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from run_builder import build_run, hit, judgment
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from test_browser_report import (
    SCREENSHOTS,
    _screenshot,
    _severe,
    driver,  # noqa: F401  (the fixture)
)

from runner.judge.app import JudgeThread
from runner.judge.labels import compact, read_log, standing_labels, store_dir
from runner.judge.session import open_session
from runner.report import report_run

pytestmark = pytest.mark.browser

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)


def _run(tmp_path: Path) -> Path:
    hits = [hit("q1", f"m{i}", caption=f"a caption of m{i}") for i in range(1, 5)]
    hits += [hit("q1", "m3", mode="fts"), hit("q1", "m9", mode="fts", caption="only fts")]
    hits += [hit("q2", f"n{i}", caption=f"<b>n{i}</b>") for i in range(1, 4)]
    return build_run(tmp_path, hits=hits, judgments=[judgment("q1", "m1", 2)])


def _open(page: WebDriver, url: str) -> None:
    page.get(url)
    WebDriverWait(page, 30).until(
        lambda d: d.execute_script("return document.body.dataset.ready") == "true"
    )


def _handled(page: WebDriver) -> int:
    return int(page.execute_script("return document.body.dataset.handled || 0"))


def _press(page: WebDriver, *keys: str) -> None:
    """Press keys one at a time, each after the page handled the one before."""
    for key in keys:
        _press_one(page, key)


def _press_one(page: WebDriver, key: str) -> None:
    before = _handled(page)
    page.find_element(By.TAG_NAME, "body").send_keys(key)
    WebDriverWait(page, 30).until(lambda d: _handled(d) > before)


def _current(page: WebDriver) -> tuple[str, str]:
    query = page.find_element(By.ID, "query-id").text
    media = page.find_element(By.CSS_SELECTOR, ".card.current").get_attribute("data-media")
    return query, str(media)


def _progress(page: WebDriver) -> tuple[int, int]:
    bar = page.find_element(By.ID, "progress")
    return int(str(bar.get_attribute("data-done"))), int(str(bar.get_attribute("data-total")))


def test_keys_grade_reload_resumes_undo_and_qrels_equal_what_was_typed(
    driver: WebDriver,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    run = _run(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    (images / "m3.jpg").write_bytes(PNG)
    session = open_session(run, rater="ana", k=5, images=images)
    typed: dict[tuple[str, str], int] = {}
    with JudgeThread(session) as url:
        _open(driver, url)
        assert _progress(driver) == (0, 7)
        assert driver.find_element(By.ID, "query-text").text == "text of q1"
        # The hit with an image shows it; the others show their caption and file name.
        card = driver.find_element(By.CSS_SELECTOR, '.card[data-media="m3"]')
        width = driver.execute_script("return arguments[0].querySelector('img').naturalWidth", card)
        assert width == 1
        text = driver.find_element(By.CSS_SELECTOR, '.card[data-media="m9"]').text
        assert "only fts" in text and "m9.jpg" in text and "fts #2" in text
        for grade in ("2", "0", "3"):
            typed[_current(driver)] = int(grade)
            _press(driver, grade)
        assert _progress(driver) == (3, 7)
        driver.refresh()  # reload: the grades are there and the page resumes at the next hit
        _open(driver, url)
        assert _progress(driver) == (3, 7)
        for key, given in typed.items():
            if key[0] == driver.find_element(By.ID, "query-id").text:
                selector = f'.card[data-media="{key[1]}"]'
                assert driver.find_element(By.CSS_SELECTOR, selector).get_attribute(
                    "data-grade"
                ) == str(given)
        assert _current(driver) not in typed
        typed[_current(driver)] = 1
        _press(driver, "1")
        last = _current(driver)
        _press(driver, "u")  # takes back the 1 and goes back to it
        del typed[next(reversed(typed))]
        assert _progress(driver) == (3, 7) and _current(driver) != last
        _press(driver, Keys.ARROW_DOWN)  # the next query
        assert driver.find_element(By.ID, "query-id").text == "q2"
        assert "<b>n1</b>" in driver.find_element(By.ID, "hits").text  # text, not markup
        typed[_current(driver)] = 3
        _press(driver, "3", Keys.ARROW_UP)
        assert driver.find_element(By.ID, "query-id").text == "q1"
        _press(driver, "7")  # not on the scale: the server's message, nothing recorded
        assert driver.find_element(By.ID, "status").text.startswith("grade: 7 is not on the scale")
        _press(driver, "x")  # not a key of the page
        assert _progress(driver) == (4, 7)
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert all(r.startswith(url) for r in resources), resources
        assert [e["message"] for e in _severe(driver)] == [
            f"{url}api/grade - Failed to load resource: the server responded with a status of "
            "400 (Bad Request)"
        ]  # the 7, and nothing else
    standing = standing_labels(read_log(store_dir(run)))
    assert {(q, m): g for _, q, m, g in standing.rows()} == typed
    assert (store_dir(run) / "qrels" / "ana.qrels").read_text() == "".join(
        f"{q} 0 {m} {g}\n" for (q, m), g in sorted(typed.items())
    )


def test_a_second_rater_overlaps_without_seeing_the_grades(
    driver: WebDriver,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    run = _run(tmp_path)
    ana = open_session(run, rater="ana", k=5)
    for item, grade in zip(ana.items[:3], (3, 0, 2), strict=False):
        ana.grade(item.query_id, item.media_id, grade)
    graded = {(i.query_id, i.media_id) for i in ana.items[:3]}
    bo = open_session(run, rater="bo", k=5, overlap=True)
    with JudgeThread(bo) as url:
        _open(driver, url)
        assert _progress(driver) == (0, 3)
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        assert all(c.get_attribute("data-grade") is None for c in cards)
        assert "not graded" in driver.find_element(By.ID, "hits").text
        seen = set()
        for key in ("3", "1", "2"):
            seen.add(_current(driver))
            _press(driver, key)
        assert _progress(driver) == (3, 3)
        assert driver.find_element(By.ID, "done").is_displayed()
    assert seen == graded
    raters = standing_labels(read_log(store_dir(run)))["rater"].to_list()
    assert raters.count("ana") == 3 and raters.count("bo") == 3


def test_bad_input_shows_the_servers_message(
    driver: WebDriver,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    run = _run(tmp_path)
    with JudgeThread(open_session(run, rater="ana", k=5)) as url:
        _open(driver, url)
        _press(driver, "u")  # nothing to undo yet
        assert driver.find_element(By.ID, "status").text == "undo: nothing to undo"
        _press(driver, "1")
        assert driver.find_element(By.ID, "status").text == ""


@pytest.mark.skipif(
    not os.environ.get("VLBENCH_SCREENSHOT_RUN"), reason="set VLBENCH_SCREENSHOT_RUN=<run dir>"
)
def test_screenshot_of_a_real_run(
    driver: WebDriver,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    run = Path(os.environ["VLBENCH_SCREENSHOT_RUN"])
    session = open_session(run, rater="readme", k=5)
    session.store = tmp_path / "store"  # grade into a scratch store, not the suite's
    with JudgeThread(session) as url:
        _open(driver, url)
        _press(driver, Keys.ARROW_DOWN, "2", "2", "0", "3", "1", "0", Keys.ARROW_LEFT)
        _screenshot(driver, SCREENSHOTS / "judge.png")
    compact(session.store)


def test_the_reports_raters_section_renders_offline(
    driver: WebDriver,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    run = _run(tmp_path)
    for rater, shift in (("ana", 0), ("bo", 1), ("cy", 2)):
        session = open_session(run, rater=rater, k=5, overlap=rater != "ana")
        for i, item in enumerate(session.items):
            session.grade(item.query_id, item.media_id, (i + shift * (i % 2)) % 4)
    html = report_run(run).html
    driver.get(html.as_uri())
    box = driver.execute_script(
        "const r = document.querySelector('#raters svg.plot').getBoundingClientRect();"
        "return [r.width, r.height]"
    )
    assert box[0] > 100 and box[1] > 100
    text = driver.find_element(By.ID, "raters").text
    assert "Krippendorff" in text and "ana vs bo (" in text  # the plot's text is text
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert _severe(driver) == []
    if os.environ.get("VLBENCH_SCREENSHOTS"):
        driver.execute_script("document.getElementById('raters').scrollIntoView()")
        driver.save_screenshot(str(SCREENSHOTS / "judge-report.png"))
