"""Gates for nightly jobs: conditions on a comparison's deltas that fail the job when they hold."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import polars as pl

from runner.errors import UsageError
from runner.evaluate.compare.runs import Comparison
from runner.evaluate.measures import parse_measure

__all__ = ["Gate", "GateFailure", "check_gates", "parse_gate"]

_OPS: Final = {
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}
_GATE: Final = re.compile(
    r"""^\s*
    (?:(?P<mode>[A-Za-z0-9_.-]+)\s*:)?\s*         # optional mode:
    (?P<measure>[A-Za-z]+(?:@\d+)?)                 # measure, ir_measures spelling
    (?:@(?P<setting>[^<>@\s]*[^<>@\s=]))?          # optional @setting, e.g. @tst=0.5
    \s*(?P<op><=|>=|<|>)\s*
    (?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    \s*$""",
    re.VERBOSE,
)
_GATE_FORMAT: Final = (
    "[MODE:]MEASURE[@SETTING] OP DELTA, e.g. 'nDCG@10<-0.02' or 'semantic:P@10<=-0.05'"
)


@dataclass(frozen=True, slots=True)
class Gate:
    """A condition on a delta (B - A) that fails a comparison when it holds.

    `nDCG@10<-0.02` fails when nDCG@10 dropped by more than 0.02 in any mode and setting;
    `semantic:nDCG@10@sem=0.5<-0.02` only for that mode and setting. Across settings, a
    setting names the pairs it is part of, in run A or in run B.
    """

    measure: str
    op: str
    value: float
    mode: str | None = None
    setting: str | None = None

    def __str__(self) -> str:
        mode = f"{self.mode}:" if self.mode else ""
        setting = f"@{self.setting}" if self.setting else ""
        return f"{mode}{self.measure}{setting}{self.op}{self.value:g}"

    def trips(self, delta: float) -> bool:
        """Whether a delta fails this gate (a NaN delta never does)."""
        return not math.isnan(delta) and bool(_OPS[self.op](delta, self.value))


@dataclass(frozen=True, slots=True)
class GateFailure:
    """One compared row that tripped a gate."""

    gate: Gate
    mode: str
    setting: str
    unit: str
    mean_a: float
    mean_b: float
    delta: float
    p_holm: float

    def __str__(self) -> str:
        return (
            f"{self.gate}: {self.mode} {self.setting} ({self.unit}): "
            f"{self.mean_a:.4f} -> {self.mean_b:.4f}, delta {self.delta:+.4f}, "
            f"p(Holm) {self.p_holm:.3g}"
        )


def parse_gate(text: str) -> Gate:
    """Parse `[MODE:]MEASURE[@SETTING] OP DELTA`; OP is one of < <= > >=.

    The measure is matched case-insensitively and stored in its canonical spelling
    (`ndcg@10` -> `nDCG@10`). Raises `UsageError` saying what is wrong.
    """
    match = _GATE.match(text)
    if match is None:
        raise UsageError(f"cannot parse gate {text!r}: expected {_GATE_FORMAT}")
    try:
        measure = str(parse_measure(match["measure"]))
    except UsageError as exc:
        raise UsageError(f"gate {text!r}: {exc}") from None
    return Gate(
        measure=measure,
        op=match["op"],
        value=float(match["value"]),
        mode=match["mode"],
        setting=match["setting"].strip() if match["setting"] else None,
    )


def check_gates(comparison: Comparison, gates: Iterable[Gate | str]) -> list[GateFailure]:
    """The compared rows that trip any gate, in the order of the gates.

    A gate that matches no compared row with a delta (a measure, mode or setting the two runs
    do not share) raises `UsageError`: a gate that silently never fires guards nothing.
    """
    failures = []
    table = comparison.measures.filter(pl.col("delta").is_not_nan() & pl.col("delta").is_not_null())
    for item in gates:
        gate = parse_gate(item) if isinstance(item, str) else item
        rows = table.filter(pl.col("measure") == gate.measure)
        if gate.mode is not None:
            rows = rows.filter(pl.col("mode") == gate.mode)
        if gate.setting is not None:
            rows = rows.filter(
                pl.any_horizontal(
                    pl.col(c) == gate.setting for c in ("setting", "setting_a", "setting_b")
                )
            )
        if rows.height == 0:
            raise UsageError(
                f"gate {gate} matches nothing the two runs both measured{_known(table)}"
            )
        for row in rows.iter_rows(named=True):
            if gate.trips(row["delta"]):
                failures.append(
                    GateFailure(
                        gate=gate,
                        mode=row["mode"],
                        setting=row["setting"],
                        unit=row["unit"],
                        mean_a=row["mean_a"],
                        mean_b=row["mean_b"],
                        delta=row["delta"],
                        p_holm=_nan(row["p_randomisation_holm"]),
                    )
                )
    return failures


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _known(table: pl.DataFrame) -> str:
    if table.height == 0:
        return " (no measure was compared)"
    measures = ", ".join(table["measure"].unique(maintain_order=True).to_list())
    modes = ", ".join(table["mode"].unique(maintain_order=True).to_list())
    return f" (measures: {measures}; modes: {modes})"
