"""YAML aliases in a suite: an alias bomb is refused at its line, fast; ordinary aliases work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.errors import SuiteError
from runner.suite import load_suite
from runner.suite.yaml_aliases import ALIAS_NODES, ALIAS_RATIO

QUERY = "queries: [a dog on a beach]\n"


def bomb(levels: int = 9, width: int = 9, *, under: str = "") -> str:
    """Nine levels of nine aliases: "billion laughs" (9**9 = 387,420,489 leaves)."""
    lines = ["name: bomb", "a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    if under:
        lines.append(f"{under}: *a{levels - 1}")
    return "\n".join(lines) + "\n" + QUERY


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_alias_bomb_is_refused_at_the_alias_that_repeats_the_most(tmp_path: Path) -> None:
    with pytest.raises(SuiteError) as caught:
        load_suite(write(tmp_path, bomb()), env={})
    err = caught.value
    # a8 (line 10) holds the aliases that repeat the most: *a7, 9**7 + ... nodes each.
    assert (err.line, err.key) == (10, "a8[0]")
    assert "alias bomb" in err.reason and f"{ALIAS_NODES:,} allowed" in err.reason


def test_alias_bomb_under_a_real_key_is_refused_before_validation(tmp_path: Path) -> None:
    """Under a key the suite reads, pydantic would otherwise walk 387 million items."""
    with pytest.raises(SuiteError, match=r"suite\.yaml:11: judgments: .*alias bomb"):
        load_suite(write(tmp_path, bomb(under="judgments")), env={})


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_alias_bomb_exits_2_from_the_cli_with_file_and_line(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, bomb())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # The timeout only keeps a regression from hanging the test run; nothing is timed.
    done = subprocess.run(
        [sys.executable, "-c", "from runner.cli import main; main()", command, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {path}:10: a8[0]: ")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "reports").exists()


def test_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    text = "name: t\nqueries: &q\n  - a dog\n  - *q\n"
    with pytest.raises(SuiteError) as caught:
        load_suite(write(tmp_path, text), env={})
    assert (caught.value.line, caught.value.key) == (4, "queries[1]")
    assert "inside its own anchor &q" in caught.value.reason


def test_ordinary_aliases_still_work(tmp_path: Path) -> None:
    text = (
        "name: t\nqueries:\n"
        "  - {id: a, text: a dog, labels: &animals [dog, cat]}\n"
        "  - {id: b, text: a cat, labels: *animals}\n"
    )
    suite = load_suite(write(tmp_path, text), env={})
    assert [q.labels for q in suite.queries] == [("dog", "cat"), ("dog", "cat")]


def test_many_aliases_within_the_bound_are_accepted(tmp_path: Path) -> None:
    """A labels list aliased into many queries repeats few nodes per alias: accepted."""
    n = 2000
    lines = ["name: t", "queries:", "  - {id: q0, text: a dog, labels: &l [dog, cat, bird]}"]
    lines += [f"  - {{id: q{i}, text: a dog, labels: *l}}" for i in range(1, n)]
    suite = load_suite(write(tmp_path, "\n".join(lines) + "\n"), env={})
    assert len(suite.queries) == n
    assert n * 4 < ALIAS_NODES  # what the aliases repeat (4 nodes each) is under the floor


def test_the_bound_grows_with_what_the_file_writes(tmp_path: Path) -> None:
    """Just past the floor is refused in a small file; ALIAS_RATIO x its own size is not."""
    n = 2 * ALIAS_RATIO  # aliases of one anchor: more than the ratio alone allows
    big = ALIAS_NODES // n + 1  # n aliases of it repeat just over ALIAS_NODES nodes
    anchor = "[" + ", ".join(["x"] * big) + "]"
    aliases = "\n".join(f"b{i}: *a" for i in range(n))
    text = f"name: t\na: &a {anchor}\n{aliases}\n{QUERY}"
    with pytest.raises(SuiteError, match=r":3: b0: .*alias bomb"):
        load_suite(write(tmp_path, text), env={})
    # The same aliases in a file that writes more than 1/ALIAS_RATIO of what they repeat: the
    # unknown keys are all that is left to refuse.
    padding = "[" + ", ".join(["y"] * (big * n // ALIAS_RATIO)) + "]"
    text = f"name: t\npad: {padding}\na: &a {anchor}\n{aliases}\n{QUERY}"
    with pytest.raises(SuiteError, match=r"unknown key 'pad'"):
        load_suite(write(tmp_path, text), env={})
