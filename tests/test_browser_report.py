"""report.html in headless Chromium (Debian's package): plots render, nothing is fetched.

Set VLBENCH_SCREENSHOTS=1 to also save full-page PNGs in reports/screenshots/ (for the README);
VLBENCH_SCREENSHOT_RUN=<run dir> screenshots the report of that run (e.g. the demo's) as well.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from test_report import realistic_run

from runner.evaluate.compare import check_gates, compare_run_dirs, parse_gate
from runner.evaluate.run import evaluate_run
from runner.report import write_report
from runner.report.html import SECTIONS

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "reports" / "screenshots"
ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--disable-default-apps",
    "--window-size=1280,1000",
)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run's report and a comparison report (run B worse than run A)."""
    root = tmp_path_factory.mktemp("browser")
    run_a = realistic_run(root / "a", "run-a")
    run_b = realistic_run(root / "b", "run-b", worse=0.15)
    single = write_report(run_a, evaluate_run(run_a), out_dir=root / "single").html
    _, ev_b, cmp = compare_run_dirs(run_a, run_b)
    gates = [parse_gate("nDCG@10<-0.02")]
    compared = write_report(
        run_b,
        ev_b,
        comparison=cmp,
        out_dir=root / "compared",
        gates=gates,
        failures=check_gates(cmp, gates),
    ).html
    return {"report": single, "compare": compared}


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(
            f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
            "apt-get install chromium chromium-driver"
        )
    # Both paths are given, so Selenium Manager has nothing to download; keep it offline anyway.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (*ARGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def _svg_boxes(driver: WebDriver) -> list[dict[str, float]]:
    script = """
        return Array.from(document.querySelectorAll('svg.plot')).map(svg => {
            const r = svg.getBoundingClientRect();
            return {width: r.width, height: r.height,
                    paths: svg.querySelectorAll('path').length,
                    texts: svg.querySelectorAll('text').length};
        });
    """
    boxes: list[dict[str, float]] = driver.execute_script(script)
    return boxes


def _severe(driver: WebDriver) -> list[dict[str, object]]:
    logs: list[dict[str, object]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry for entry in logs if entry.get("level") == "SEVERE"]


# Four core plots, and the quality sections' three (intervals, fusion, cut-offs).
@pytest.mark.parametrize("which, n_plots", [("report", 7), ("compare", 8)])
def test_plots_render_and_nothing_is_fetched(
    driver: WebDriver, reports: dict[str, Path], which: str, n_plots: int
) -> None:
    driver.get(reports[which].as_uri())
    boxes = _svg_boxes(driver)
    assert len(boxes) == n_plots
    for box in boxes:
        assert box["width"] > 100 and box["height"] > 100, box
        assert box["paths"] > 0 and box["texts"] > 0, box
    sections = [k for k, _ in SECTIONS if which == "compare" or k != "comparison"]
    for key in sections:
        height = driver.execute_script(
            "return document.getElementById(arguments[0]).getBoundingClientRect().height", key
        )
        assert height > 0, key
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources == []
    assert _severe(driver) == []
    if os.environ.get("VLBENCH_SCREENSHOTS"):
        _screenshot(driver, SCREENSHOTS / f"{which}.png")


def test_renders_with_the_network_off(driver: WebDriver, reports: dict[str, Path]) -> None:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    driver.get(reports["compare"].as_uri())
    boxes = _svg_boxes(driver)
    assert len(boxes) == 8 and all(b["width"] > 100 and b["paths"] > 0 for b in boxes)
    assert _severe(driver) == []
    text = driver.execute_script("return document.body.innerText")
    assert "<script>alert('x')</script>" in text  # the caption is shown as text, not run


def _screenshot(driver: WebDriver, path: Path) -> None:
    """A PNG of the whole page, not only the window."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
