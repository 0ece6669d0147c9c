"""The noise floor of a suite from A/A runs, and gates that trip only above it.

    evs = [evaluate_run(d) for d in aa_runs]          # two or more runs with nothing changed
    floor = noise_floor(evs)                          # NOISE_SCHEMA: one floor per measure
    failures, held = check_gates_with_noise(cmp, gates, floor)

For each (mode, setting, unit, measure) and each pair of A/A runs, the per-query values are
paired by query id and d = b - a. Two things bound how far a mean moves with nothing changed:
- `max_delta`: the largest |mean(d)| seen over the pairs (what a quiet night actually did);
- `band`: z × sqrt(mean over the pairs of var(d) / n), z = 1.96 (what per-query wobble lets a
  mean of n queries move by, 95% of the time).
The floor is the larger of the two. A gate then trips only when the delta B - A meets the gate,
is significant after Holm (`significant` of the comparison), AND |delta| > floor; a row that
meets the gate but fails one of the other two is `held back`, and says by which.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from runner.errors import UsageError
from runner.evaluate.compare.gates import Gate, GateFailure, check_gates, parse_gate
from runner.evaluate.compare.runs import Comparison
from runner.evaluate.compare.significance import differences
from runner.evaluate.evaluation import Evaluation
from runner.store.reader import RunRef

__all__ = [
    "NOISE_SCHEMA",
    "Z",
    "HeldBack",
    "check_gates_with_noise",
    "noise_floor",
    "noise_floor_of_runs",
]

Z: Final = 1.959963984540054  # the 97.5th percentile of the standard normal
_KEYS: Final = ["mode", "setting", "unit", "measure"]

NOISE_SCHEMA: Final = pl.Schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "unit": pl.String,
        "measure": pl.String,
        "n_runs": pl.Int64,  # A/A runs that measured it
        "n_queries": pl.Int64,  # the smallest number of paired queries over the pairs
        "max_delta": pl.Float64,
        "band": pl.Float64,
        "floor": pl.Float64,  # max(max_delta, band)
    }
)


@dataclass(frozen=True, slots=True)
class HeldBack:
    """A compared row that met a gate but did not trip it: not significant, or within noise."""

    gate: Gate
    mode: str
    setting: str
    unit: str
    delta: float
    p_holm: float
    floor: float | None
    significant: bool
    above_floor: bool

    @property
    def reason(self) -> str:
        reasons = []
        if not self.significant:
            reasons.append("not significant after Holm")
        if not self.above_floor:
            reasons.append("within the noise floor")
        return " and ".join(reasons)

    def __str__(self) -> str:
        floor = "none" if self.floor is None else f"{self.floor:.4f}"
        return (
            f"{self.gate}: {self.mode} {self.setting} ({self.unit}): delta {self.delta:+.4f}, "
            f"p(Holm) {self.p_holm:.3g}, noise floor {floor}: held back, {self.reason}"
        )


def noise_floor(evaluations: Sequence[Evaluation]) -> pl.DataFrame:
    """The noise floor of every (mode, setting, unit, measure) of two or more A/A runs.

    Raises `UsageError` for fewer than two runs.
    """
    if len(evaluations) < 2:
        raise UsageError(f"--noise needs two or more A/A runs, got {len(evaluations)}")
    cols = [*_KEYS, "query_id", "value"]
    frames = [ev.per_query.select(cols).drop_nulls("value") for ev in evaluations]
    stats: dict[tuple[str, ...], list[tuple[float, float, int]]] = {}
    for a, b in itertools.combinations(frames, 2):
        joined = a.join(b, on=[*_KEYS, "query_id"], suffix="_b")
        # The same value summed in another order is no noise: `differences` zeroes float noise.
        joined = joined.with_columns(
            pl.Series("d", differences(joined["value"].to_numpy(), joined["value_b"].to_numpy()))
        )
        grouped = joined.group_by(_KEYS).agg(
            pl.col("d").mean().alias("mean"),
            pl.col("d").var(ddof=1).fill_null(0.0).alias("var"),
            pl.len().alias("n"),
        )
        for row in grouped.iter_rows(named=True):
            key = tuple(str(row[k]) for k in _KEYS)
            stats.setdefault(key, []).append((row["mean"], row["var"], row["n"]))
    rows = []
    for key, pairs in sorted(stats.items()):
        max_delta = max(abs(m) for m, _, _ in pairs)
        band = Z * math.sqrt(float(np.mean([v / n for _, v, n in pairs])))
        runs = 1 + math.isqrt(1 + 8 * len(pairs)) // 2  # pairs = runs (runs - 1) / 2
        rows.append(
            (*key, runs, min(n for _, _, n in pairs), max_delta, band, max(max_delta, band))
        )
    return pl.DataFrame(rows, schema=NOISE_SCHEMA, orient="row")


def noise_floor_of_runs(
    run_dirs: Sequence[RunRef], *, extra_judgments: Sequence[Path | str] | None = None
) -> pl.DataFrame:
    """`noise_floor` of A/A run directories, each evaluated with its own judgments and `extra`.

    Raises `UsageError` for fewer than two runs (before reading any), `RunError` for a
    directory that is not a readable run.
    """
    if len(run_dirs) < 2:
        raise UsageError(f"--noise needs two or more A/A runs, got {len(run_dirs)}")
    from runner.evaluate.run import evaluate_run

    return noise_floor([evaluate_run(d, extra_judgments=extra_judgments) for d in run_dirs])


def _floor_of(noise: pl.DataFrame, row: dict[str, object]) -> float | None:
    """The floor of a compared row: its own setting, else the setting of run B, else none."""
    for setting in (row["setting"], row.get("setting_b")):
        match = noise.filter(
            (pl.col("mode") == row["mode"])
            & (pl.col("setting") == setting)
            & (pl.col("unit") == row["unit"])
            & (pl.col("measure") == row["measure"])
        )
        if match.height:
            return float(match["floor"][0])
    return None


def check_gates_with_noise(
    comparison: Comparison, gates: Iterable[Gate | str], noise: pl.DataFrame
) -> tuple[list[GateFailure], list[HeldBack]]:
    """The gate failures that are significant and above the noise floor, and those held back.

    A row without a floor (a measure the A/A runs did not share) is held to significance alone.
    """
    parsed = [parse_gate(g) if isinstance(g, str) else g for g in gates]
    candidates = check_gates(comparison, parsed)
    table = comparison.measures
    failures, held = [], []
    for failure in candidates:
        row = table.filter(
            (pl.col("mode") == failure.mode)
            & (pl.col("setting") == failure.setting)
            & (pl.col("unit") == failure.unit)
            & (pl.col("measure") == failure.gate.measure)
        ).row(0, named=True)
        floor = _floor_of(noise, row)
        significant = bool(row["significant"])
        above = floor is None or abs(failure.delta) > floor
        if significant and above:
            failures.append(failure)
        else:
            held.append(
                HeldBack(
                    gate=failure.gate,
                    mode=failure.mode,
                    setting=failure.setting,
                    unit=failure.unit,
                    delta=failure.delta,
                    p_holm=failure.p_holm,
                    floor=floor,
                    significant=significant,
                    above_floor=above,
                )
            )
    return failures, held
