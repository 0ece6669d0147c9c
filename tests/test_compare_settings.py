"""Comparing settings that differ: pairs across settings, one run against itself, bad names.

The synthetic runs hold a caption mode at two cut-offs, tst=0.4 (strict) and tst=0.6 (loose),
and an fts mode once. N_QUERIES queries, each with one relevant media `good-i`:
- strict: even queries return [good-i], odd ones [miss-i-0] (one hit each);
- loose: every query returns [good-i, miss-i-0, miss-i-1] (three hits);
- fts: every query returns [miss-i-0, good-i] in every run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers_exec import DEMO_ENV
from run_builder import build_run, hit, judgment
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import UsageError
from runner.evaluate import evaluate_run
from runner.evaluate.compare import (
    Pairing,
    SettingPair,
    check_gates,
    compare_run_dirs,
    compare_runs,
    pair_settings,
    unpaired_modes,
)
from runner.execute import run_suite
from runner.server.lifecycle import ServerThread
from runner.suite import load_suite

N_QUERIES = 12
N_EVEN = (N_QUERIES + 1) // 2  # queries whose strict setting still finds their media
STRICT, LOOSE = "tst=0.4", "tst=0.6"
QUERIES_DIR = Path(__file__).resolve().parent.parent / "queries"

runner = CliRunner()


def _caption(q: str, media: str, setting: str, distance: float) -> dict[str, Any]:
    cutoff = 0.4 if setting == STRICT else 0.6
    return hit(
        q,
        media,
        mode="caption",
        setting=setting,
        cutoff=cutoff,
        textual_similarity_threshold=cutoff,
        raw_score=distance,
    )


def _hits(settings: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for i in range(N_QUERIES):
        q, good, misses = f"q{i:02d}", f"good-{i}", [f"miss-{i}-0", f"miss-{i}-1"]
        if STRICT in settings:
            rows.append(_caption(q, good if i % 2 == 0 else misses[0], STRICT, 0.3))
        if LOOSE in settings:
            for rank, media in enumerate([good, *misses]):
                rows.append(_caption(q, media, LOOSE, 0.3 + 0.1 * rank))
        for media in (misses[0], good):
            rows.append(hit(q, media, mode="fts", score_type="bm25", raw_score=5.0))
    return rows


def _judgments() -> list[dict[str, Any]]:
    return [judgment(f"q{i:02d}", f"good-{i}") for i in range(N_QUERIES)]


def _run(tmp_path: Path, name: str, *settings: str) -> Path:
    return build_run(tmp_path / name, hits=_hits(settings), judgments=_judgments(), run_id=name)


def _row(cmp_measures: pl.DataFrame, mode: str, measure: str) -> dict[str, Any]:
    rows = cmp_measures.filter(
        (pl.col("mode") == mode) & (pl.col("measure") == measure) & (pl.col("unit") == "media")
    )
    assert rows.height == 1, rows
    return rows.row(0, named=True)


# --- the library -------------------------------------------------------------------------------


def test_two_settings_of_one_run_give_the_deltas(tmp_path: Path) -> None:
    run = _run(tmp_path, "both", STRICT, LOOSE)
    _, _, cmp = compare_run_dirs(run, run, pairing=Pairing(settings=((STRICT, LOOSE),)))
    # fts, not named, is left out: in one run its only setting would just meet itself.
    assert cmp.pairs == (SettingPair("caption", STRICT, LOOSE),)
    numret = _row(cmp.measures, "caption", "NumRet")
    assert (numret["setting"], numret["setting_a"], numret["setting_b"]) == (
        f"{STRICT} → {LOOSE}",
        STRICT,
        LOOSE,
    )
    assert (numret["cutoff_a"], numret["cutoff_b"]) == (0.4, 0.6)
    assert numret["n_pairs"] == N_QUERIES
    assert numret["delta"] == pytest.approx(3 - 1)  # three hits each at 0.6, one at 0.4
    # Every query gained: the exact test gives 2 / 2^n before Holm's factor.
    assert numret["p_randomisation"] == pytest.approx(2 / 2**N_QUERIES)
    assert numret["significant"]
    rr = _row(cmp.measures, "caption", "RR")
    # Odd queries go from 0 (a miss only) to 1 (their media first); even ones stay at 1.
    assert rr["mean_a"] == pytest.approx(N_EVEN / N_QUERIES)
    assert rr["delta"] == pytest.approx(1 - N_EVEN / N_QUERIES)
    assert rr["p_randomisation"] == pytest.approx(2 / 2 ** (N_QUERIES - N_EVEN))
    assert set(cmp.measures["mode"]) == {"caption"}
    # Per query and in the rankings, the pair is named the same way.
    per_query = cmp.per_query.filter(pl.col("mode") == "caption")
    assert set(per_query["setting"]) == {f"{STRICT} → {LOOSE}"}
    assert set(per_query["setting_a"]) == {STRICT} and set(per_query["setting_b"]) == {LOOSE}
    shown = cmp.displacement.filter(pl.col("mode") == "caption")
    assert shown.height == N_QUERIES
    assert shown["n_a"].to_list() == [1] * N_QUERIES
    assert shown["n_b"].to_list() == [3] * N_QUERIES


def test_two_runs_at_different_settings_pair_across(tmp_path: Path) -> None:
    strict, loose = _run(tmp_path, "strict", STRICT), _run(tmp_path, "loose", LOOSE)
    ev_a, ev_b = evaluate_run(strict), evaluate_run(loose)
    default = compare_runs(ev_a, ev_b)  # equal labels only: nothing of caption to compare
    assert set(default.measures["mode"]) == {"fts"}
    assert unpaired_modes(ev_a, ev_b, default.pairs) == {"caption": ((STRICT,), (LOOSE,))}
    across = compare_runs(ev_a, ev_b, pairing=Pairing(across=True))
    named = compare_runs(ev_a, ev_b, pairing=Pairing(settings=((STRICT, LOOSE),)))
    assert across.pairs == named.pairs
    assert across.measures.equals(named.measures)
    assert _row(across.measures, "caption", "NumRet")["delta"] == pytest.approx(3 - 1)
    assert unpaired_modes(ev_a, ev_b, across.pairs) == {}
    # A gate names a pair by either of its settings.
    assert check_gates(across, [f"caption:RR@{LOOSE}>0.1"])
    assert check_gates(across, [f"RR@{STRICT}<0"]) == []


def test_mode_limits_where_a_pair_applies(tmp_path: Path) -> None:
    run = _run(tmp_path, "both", STRICT, LOOSE)
    ev = evaluate_run(run)
    pairs = pair_settings(ev, ev, Pairing(settings=((STRICT, LOOSE),), modes=("caption",)))
    assert SettingPair("caption", STRICT, LOOSE) in pairs
    with pytest.raises(UsageError, match=r"run A has no setting 'tst=0.4' in those modes"):
        pair_settings(ev, ev, Pairing(settings=((STRICT, LOOSE),), modes=("fts",)))


@pytest.mark.parametrize(
    "pairing, message",
    [
        pytest.param(
            Pairing(settings=(("tst=0.45", LOOSE),)),
            "run A has no setting 'tst=0.45'; its settings: caption: tst=0.4, tst=0.6; "
            "fts: default",
            id="missing-in-a",
        ),
        pytest.param(
            Pairing(settings=((STRICT, "tst=0.9"),)),
            "run B has no setting 'tst=0.9'; its settings: caption: tst=0.4, tst=0.6; fts: default",
            id="missing-in-b",
        ),
        pytest.param(
            Pairing(settings=((STRICT, "default"),)),
            "no mode has setting 'tst=0.4' in run A and 'default' in run B",
            id="different-modes",
        ),
        pytest.param(
            Pairing(settings=((STRICT, LOOSE),), modes=("semantic",)),
            "run A has no mode 'semantic'; its modes: caption, fts",
            id="missing-mode",
        ),
        pytest.param(
            Pairing(across=True, modes=("caption",)),
            "no mode has exactly one in each; run A: caption: tst=0.4, tst=0.6",
            id="across-needs-one-setting",
        ),
    ],
)
def test_bad_pairings_name_what_exists(tmp_path: Path, pairing: Pairing, message: str) -> None:
    ev = evaluate_run(_run(tmp_path, "both", STRICT, LOOSE))
    with pytest.raises(UsageError) as info:
        pair_settings(ev, ev, pairing)
    assert message in str(info.value)


def test_both_runs_are_judged_against_one_pool(tmp_path: Path) -> None:
    # Label judgments are pooled from a run's hits: B's caption also found dog-2, so B alone
    # knows two relevant media where A knows one, though both runs' fts returned only dog-1.
    dog = {"labels": ["dog"]}
    fts = hit("q", "dog-1", mode="fts", score_type="bm25", raw_score=5.0, **dog)
    only_a = [fts, hit("q", "dog-1", mode="caption", raw_score=0.2, **dog)]
    only_b = [*only_a, hit("q", "dog-2", mode="caption", raw_score=0.3, **dog)]
    labels = [judgment("q", "dog", kind="label")]
    run_a = build_run(tmp_path / "a", hits=only_a, judgments=labels, run_id="a")
    run_b = build_run(tmp_path / "b", hits=only_b, judgments=labels, run_id="b")
    kept = compare_run_dirs(run_a, run_b, measures=["R@100"], shared_pool=False)[2]
    assert _row(kept.measures, "fts", "R@100")["delta"] == pytest.approx(1 / 2 - 1 / 1)
    shared = compare_run_dirs(run_a, run_b, measures=["R@100"])[2]
    row = _row(shared.measures, "fts", "R@100")
    assert (row["mean_a"], row["mean_b"]) == (pytest.approx(1 / 2), pytest.approx(1 / 2))
    assert _row(shared.measures, "caption", "R@100")["delta"] == pytest.approx(2 / 2 - 1 / 2)


# --- the command line --------------------------------------------------------------------------


def test_cli_compares_two_settings_of_one_run(tmp_path: Path) -> None:
    run = _run(tmp_path, "both", STRICT, LOOSE)
    out = tmp_path / "cmp"
    args = ["compare", str(run), str(run), "--setting-a", STRICT, "--setting-b", LOOSE]
    result = runner.invoke(app, [*args, "--mode", "caption", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"two settings of one run (A → B): caption {STRICT} → {LOOSE}\n" in result.output
    table_rows = [line for line in result.output.splitlines() if line.startswith("caption ")]
    assert table_rows and all(f"{STRICT} → {LOOSE}" in line for line in table_rows)
    assert (out / "report.html").is_file()
    compared = f"Settings compared (A → B): caption {STRICT} → {LOOSE}."
    assert compared in (out / "report.html").read_text(encoding="utf-8")
    assert compared in (out / "report.md").read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rows = [r for r in summary["comparison"]["measures"] if r["mode"] == "caption"]
    assert rows and {(r["setting_a"], r["setting_b"]) for r in rows} == {(STRICT, LOOSE)}
    # Without --out the report goes into run B under a name that carries the pair.
    default_out = runner.invoke(app, args)
    assert default_out.exit_code == 0, default_out.output
    assert "compare-both-caption_tst_0.4_to_tst_0.6" in default_out.output


def test_cli_across_settings_and_the_default_note(tmp_path: Path) -> None:
    strict, loose = _run(tmp_path, "strict", STRICT), _run(tmp_path, "loose", LOOSE)
    plain = runner.invoke(app, ["compare", str(strict), str(loose), "--out", str(tmp_path / "p")])
    assert plain.exit_code == 0, plain.output
    assert "note: mode caption was not compared" in plain.output
    across = runner.invoke(
        app,
        ["compare", str(strict), str(loose), "--across-settings", "--out", str(tmp_path / "x")],
    )
    assert across.exit_code == 0, across.output
    assert f"settings paired (A → B): caption {STRICT} → {LOOSE}; fts default" in across.output
    assert "note:" not in across.output


@pytest.mark.parametrize(
    "options, message",
    [
        pytest.param(
            ["--setting-a", "tst=0.45", "--setting-b", LOOSE],
            "run A has no setting 'tst=0.45'; its settings: caption: tst=0.4, tst=0.6",
            id="unknown-setting",
        ),
        pytest.param(["--setting-a", STRICT], "got 1 --setting-a and 0 --setting-b", id="unpaired"),
        pytest.param(
            ["--setting-a", STRICT, "--setting-b", LOOSE, "--mode", "nope"],
            "run A has no mode 'nope'; its modes: caption, fts",
            id="unknown-mode",
        ),
        pytest.param(["--mode", "caption"], "--mode says where", id="mode-alone"),
    ],
)
def test_cli_bad_settings_exit_2(tmp_path: Path, options: list[str], message: str) -> None:
    run = _run(tmp_path, "both", STRICT, LOOSE)
    result = runner.invoke(app, ["compare", str(run), str(run), *options])
    assert result.exit_code == 2, result.output
    assert message in result.output


# --- the two demo suites against the local server ----------------------------------------------

N_DEMO_QUERIES = 16  # enough for a significant difference, few enough to run in seconds


def _demo_run(name: str, server: ServerThread, out: Path) -> Path:
    env = {"VL_BASE_URL": server.base_url, "VL_DATASET_ID": server.dataset_id}
    suite = load_suite(QUERIES_DIR / f"demo-{name}.yaml", env=env)
    suite = suite.model_copy(
        update={"queries": suite.queries[:N_DEMO_QUERIES], "rate_limit": 2000.0}
    )
    result = asyncio.run(run_suite(suite, out=out, environ=DEMO_ENV))
    assert result.status == "complete", result.message
    return result.run_dir


def test_demo_suites_differ_where_the_cut_off_does(
    tmp_path: Path, demo_server: ServerThread
) -> None:
    strict = _demo_run("strict", demo_server, tmp_path)
    loose = _demo_run("loose", demo_server, tmp_path)
    _, _, cmp = compare_run_dirs(strict, loose, pairing=Pairing(across=True))
    assert {(p.mode, p.setting_a, p.setting_b) for p in cmp.pairs} == {
        ("caption", "tst=0.4", "tst=0.6"),
        ("fts", "default", "default"),
        ("semantic", "st=0.4", "st=0.6"),
    }
    media = cmp.measures.filter(pl.col("unit") == "media")
    for mode in ("caption", "semantic"):
        numret = _row(media, mode, "NumRet")
        # A looser cut-off returns a superset: never fewer hits, here significantly more.
        assert numret["mean_b"] > numret["mean_a"]
        assert numret["significant"], numret
    per_query = cmp.per_query.filter(
        pl.col("mode").is_in(["caption", "semantic"]) & (pl.col("measure") == "NumRet")
    )
    assert (per_query["value_b"] >= per_query["value_a"]).all()
    fts = media.filter(pl.col("mode") == "fts")
    assert fts.height > 0
    assert not fts["significant"].any()
    assert fts["delta"].abs().max() == 0.0
