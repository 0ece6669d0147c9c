"""`vlbench validate` and `vlbench plan`: thin shells; a bad suite exits 2 and writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.cli import app
from runner.plan import expand, summarise
from runner.suite import load_suite

GOOD = (
    "name: cli\n"
    "rate_limit: 5/s\n"
    "pagination: {max_pages: 2}\n"
    "sweep: {semantic_threshold: [0.5, 0.7]}\n"
    "queries:\n  - {id: a, text: a dog}\n  - {id: b, text: a dog}\n  - {id: c, text: a cat}\n"
)
# 2 distinct texts × (caption default + fts default + 2 semantic) = 8 requests; 12 specs.
GOOD_REQUESTS = 2 * (1 + 1 + 2)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, so that a test can see that nothing was written."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    # The shipped suites read VL_BASE_URL / VL_DATASET_ID: unset them for a known outcome.
    result = CliRunner().invoke(app, list(args), env={"VL_BASE_URL": None, "VL_DATASET_ID": None})
    return result.exit_code, result.stdout, result.stderr


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_validate_ok(workdir: Path) -> None:
    (workdir / "s.yaml").write_text(GOOD)
    code, out, _ = invoke("validate", "s.yaml")
    assert code == 0
    assert out.strip() == f"ok: 3 queries, 3 modes, {GOOD_REQUESTS} requests"


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_bad_suite_exits_2_and_writes_nothing(workdir: Path, command: str) -> None:
    (workdir / "s.yaml").write_text(GOOD + "sweep2: {}\n")
    before = tree(workdir)
    code, out, err = invoke(command, "s.yaml")
    assert code == 2
    assert out == ""
    assert err.strip() == "error: s.yaml:9: sweep2: unknown key 'sweep2'; did you mean 'sweep'?"
    assert tree(workdir) == before


def test_missing_suite_file_exits_2(workdir: Path) -> None:
    code, _, err = invoke("validate", "nope.yaml")
    assert code == 2 and "nope.yaml: no such file" in err


def test_plan_prints_the_summary(workdir: Path) -> None:
    (workdir / "s.yaml").write_text(GOOD)
    code, out, _ = invoke("plan", "s.yaml")
    assert code == 0
    suite = load_suite(workdir / "s.yaml")
    assert out.strip() == summarise(expand(suite), suite).render()
    assert f"{GOOD_REQUESTS} unique" in out and "st=0.7" in out


def test_plan_json_and_shard(workdir: Path) -> None:
    (workdir / "s.yaml").write_text(GOOD)
    code, out, _ = invoke("plan", "s.yaml", "--json")
    whole = json.loads(out)
    assert code == 0 and whole["n_requests"] == GOOD_REQUESTS and whole["shard"] is None
    assert whole["min_duration_s"] == pytest.approx(GOOD_REQUESTS / 5)
    parts = [
        json.loads(invoke("plan", "s.yaml", "--json", "--shard", f"{k}/3")[1]) for k in (1, 2, 3)
    ]
    assert sum(p["n_requests"] for p in parts) == GOOD_REQUESTS
    assert [p["shard"] for p in parts] == ["1/3", "2/3", "3/3"]


@pytest.mark.parametrize("value", ["4/3", "x", "0/2"])
def test_plan_bad_shard_exits_2(workdir: Path, value: str) -> None:
    (workdir / "s.yaml").write_text(GOOD)
    code, out, err = invoke("plan", "s.yaml", "--shard", value)
    assert code == 2 and out == "" and err.startswith("error: ")


def test_shipped_demo_validates_from_the_repository_root() -> None:
    root = Path(__file__).resolve().parent.parent
    cwd = os.getcwd()
    try:
        os.chdir(root)
        code, out, _ = invoke("validate", "queries/demo.yaml")
    finally:
        os.chdir(cwd)
    suite = load_suite(root / "queries" / "demo.yaml")
    n_modes = len(suite.modes)
    expected = (
        f"ok: {len(suite.queries)} queries, {n_modes} modes, {len(expand(suite).requests)} requests"
    )
    assert code == 0 and out.strip() == expected


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_commands_have_help_with_an_example(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0 and "Example: vlbench" in out
