"""The rule for a night that moved: a series' nights, their paired tests and noise floors.

`load_history` (runner.evaluate.history) reads the numbers with DuckDB; this module only
judges them, on plain frames, so that the rule is read (and tested) apart from the load. The
rule itself is described in `runner.evaluate.history`'s module doc and in `HistoryRule`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import polars as pl
from scipy import stats

from runner.errors import UsageError

__all__ = ["SERIES", "HistoryRule", "flag_nights"]

# The columns that name one series: a measure of a mode at a setting, at one unit.
SERIES: Final = ("mode", "setting", "unit", "measure")


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """When a night counts as moved (see the module doc)."""

    k: float = 3.0
    min_history: int = 3
    alpha: float = 0.01
    min_pairs: int = 5
    min_delta: float = 0.01
    # "noise": the rule of `vlbench compare --noise` (runner.evaluate.compare.noise): moved when
    # the paired test is significant after Holm (across the measures of a mode and setting that
    # night) AND |Δ| is above the noise floor of the earlier nights that did not move;
    # "either": the older rule, |Δ| > kσ OR a significant paired test.
    rule: str = "noise"

    def __post_init__(self) -> None:
        if self.rule not in ("noise", "either"):
            raise UsageError(f"--rule {self.rule}: use noise or either")

    def describe(self) -> str:
        if self.rule == "noise":
            return (
                f"A night moved when |Δ| ≥ {self.min_delta:g}, a paired t-test over at least "
                f"{self.min_pairs} queries against the previous night gives p < {self.alpha:g} "
                f"after Holm across measures, and |Δ| is above the noise floor: the larger of "
                f"the biggest |Δ| and 1.96 standard errors of the earlier nights that did not "
                f"move (needs {self.min_history} of them; the band is the previous value ± it)."
            )
        return (
            f"A night moved when |Δ| ≥ {self.min_delta:g} and either |Δ| > {self.k:g}σ "
            f"(σ: standard deviation over at least {self.min_history} earlier nights) or a "
            f"paired t-test over at least {self.min_pairs} queries against the previous night "
            f"gives p < {self.alpha:g}."
        )


def _p_value(n: int, mean_d: float | None, sd_d: float | None) -> float | None:
    """Two-sided paired t-test p from the differences' n, mean and sd (None under 2 pairs)."""
    if n < 2 or mean_d is None:
        return None
    if sd_d is None or sd_d == 0.0 or not math.isfinite(sd_d):
        return 1.0 if abs(mean_d) < 1e-15 else 0.0
    t = mean_d / (sd_d / math.sqrt(n))
    return min(1.0, 2.0 * float(stats.t.sf(abs(t), df=n - 1)))


def _holm_by_family(paired: pl.DataFrame) -> dict[tuple[Any, ...], tuple[int, float | None, float]]:
    """(run_id, *series) -> (n_pairs, p, p after Holm across the measures of its family)."""
    from runner.evaluate.compare.significance import holm

    raw: dict[tuple[Any, ...], tuple[int, float | None]] = {}
    for row in paired.iter_rows(named=True):
        key = (row["run_id"], *(row[c] for c in SERIES))
        raw[key] = (int(row["n_pairs"]), _p_value(int(row["n_pairs"]), row["mean_d"], row["sd_d"]))
    families: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for key in raw:
        families.setdefault(key[:4], []).append(key)  # run_id, mode, setting, unit
    out = {}
    for keys in families.values():
        pvalues = [raw[k][1] for k in keys]
        adjusted = holm([math.nan if p is None else float(p) for p in pvalues])
        out.update({k: (raw[k][0], raw[k][1], adj) for k, adj in zip(keys, adjusted, strict=True)})
    return out


def _floor(quiet: Sequence[tuple[float, float | None, int]], rule: HistoryRule) -> float | None:
    """The noise floor from earlier quiet nights' (delta, sd of paired differences, n)."""
    if len(quiet) < rule.min_history:
        return None
    from runner.evaluate.compare.noise import Z

    largest = max(abs(d) for d, _, _ in quiet)
    variances = [(sd or 0.0) ** 2 / n for _, sd, n in quiet if n > 0]
    band = Z * math.sqrt(sum(variances) / len(variances)) if variances else 0.0
    return max(largest, band)


def flag_nights(summary: pl.DataFrame, paired: pl.DataFrame, rule: HistoryRule) -> pl.DataFrame:
    """Each night of each series with its delta, test, noise floor and whether it moved.

    `summary`: one row a (night, series) with its value; `paired`: per (night, series) the
    n, mean and sd of the per-query differences against the previous night. The columns added
    are those `History.series` documents.
    """
    tests = _holm_by_family(paired)
    spread = {
        (row["run_id"], *(row[c] for c in SERIES)): row["sd_d"]
        for row in paired.iter_rows(named=True)
    }
    out: list[dict[str, Any]] = []
    for _, group in summary.group_by(list(SERIES), maintain_order=True):
        earlier: list[float] = []
        quiet: list[tuple[float, float | None, int]] = []  # nights that did not move
        for row in group.sort("night").iter_rows(named=True):
            value = row["value"]
            prev = earlier[-1] if earlier else None
            delta = value - prev if value is not None and prev is not None else None
            finite = [v for v in earlier if v is not None and math.isfinite(v)]
            std = _std(finite) if len(finite) >= rule.min_history else None
            key = (row["run_id"], *(row[c] for c in SERIES))
            n_pairs, p, p_holm = tests.get(key, (0, None, math.nan))
            floor = _floor(quiet, rule)
            if rule.rule == "noise":
                why = _why_noise(delta, std, len(finite), n_pairs, p_holm, floor, rule)
            else:
                why = _why(delta, std, len(finite), n_pairs, p, rule)
            out.append(
                {
                    **row,
                    "delta": delta,
                    "hist_std": std,
                    "n_history": len(finite),
                    "n_pairs": n_pairs,
                    "p_value": p,
                    "moved": bool(why),
                    "why": why,
                    "floor": floor,
                    "band_lo": prev - floor if prev is not None and floor is not None else None,
                    "band_hi": prev + floor if prev is not None and floor is not None else None,
                }
            )
            if delta is not None and math.isfinite(delta) and not why:
                quiet.append((delta, spread.get(key), n_pairs))
            earlier.append(value)
    schema: dict[str, Any] = {
        **dict(summary.schema),
        "delta": pl.Float64,
        "hist_std": pl.Float64,
        "n_history": pl.Int64,
        "n_pairs": pl.Int64,
        "p_value": pl.Float64,
        "moved": pl.Boolean,
        "why": pl.String,
        "floor": pl.Float64,  # the noise floor the night was held to (None: too few nights)
        "band_lo": pl.Float64,  # previous value - floor
        "band_hi": pl.Float64,
    }
    return pl.DataFrame(out, schema=schema)


def _why_noise(
    delta: float | None,
    std: float | None,
    n_history: int,
    n_pairs: int,
    p_holm: float,
    floor: float | None,
    rule: HistoryRule,
) -> str:
    """The noise rule (see `HistoryRule.rule`): significant after Holm AND above the floor."""
    if not _large_enough(delta, rule):
        return ""
    if n_pairs < rule.min_pairs or math.isnan(p_holm) or p_holm >= rule.alpha:
        return ""
    if floor is not None and abs(delta) <= floor:
        return ""
    sigma = f"; σ {std:.3g} over {n_history} nights" if std is not None else ""
    above = (
        f"|Δ| {abs(delta):.3g} > noise floor {floor:.3g}" if floor is not None else "no floor yet"
    )
    return f"paired t-test p(Holm) {p_holm:.2g} over {n_pairs} queries; {above}{sigma}"


def _large_enough(delta: float | None, rule: HistoryRule) -> TypeGuard[float]:
    """|Δ| ≥ `min_delta`, the floor every rule holds a move to (a flat series flags nothing)."""
    return delta is not None and math.isfinite(delta) and abs(delta) >= rule.min_delta


def _std(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _why(
    delta: float | None,
    std: float | None,
    n_history: int,
    n_pairs: int,
    p: float | None,
    rule: HistoryRule,
) -> str:
    if not _large_enough(delta, rule):
        return ""
    reasons = []
    if std is not None and abs(delta) > rule.k * std:
        reasons.append(f"|Δ| {abs(delta):.3g} > {rule.k:g}σ (σ {std:.3g} over {n_history} nights)")
    if p is not None and n_pairs >= rule.min_pairs and p < rule.alpha:
        reasons.append(f"paired t-test p {p:.2g} over {n_pairs} queries")
    return "; ".join(reasons)
