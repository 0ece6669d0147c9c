"""summary.json: the report's figures for machines (dashboards, history, nightly checks).

Shape (`"format": 1`):
- `run`: the manifest's identity and counts (base URL without user info or query, never a
  token), `generated_at`, `measures`, `primary_measure`, `queries` {total, judged};
- `settings`: one entry per (mode, setting, unit): cutoff, n_queries, and the mean of every
  measure; `best`: per (mode, unit), for each quality measure the best setting and its value;
- `operating_points`, `sweep`, `threshold_check`: the Evaluation's rows;
- `unjudged`: {hits, queries_without_judgments}; `overlap`: mean Jaccard / RBO per setting pair;
- `comparison` (for `vlbench compare`): run ids, parameters, the verdict rows, regressions,
  displacement and drift summaries; `gates`: each gate and whether it failed.
NaN and infinities are written as null (JSON has neither).
"""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl

from runner.report.content import ReportContent

__all__ = ["build_summary", "dumps"]


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [_clean(row) for row in frame.to_dicts()]


def _comparison(content: ReportContent) -> dict[str, Any] | None:
    cmp = content.comparison
    if cmp is None:
        return None
    displacement = cmp.displacement.group_by("mode", "setting").agg(
        pl.len().alias("queries"),
        pl.col("rbo").mean().alias("mean_rbo"),
        pl.col("jaccard").mean().alias("mean_jaccard"),
        pl.col("mean_abs_rank_change").mean(),
    )
    return {
        "run_a": cmp.run_a,
        "run_b": cmp.run_b,
        "alpha": cmp.alpha,
        "n_permutations": cmp.n_permutations,
        "seed": cmp.seed,
        "measures": _rows(cmp.measures),
        "regressions": _rows(cmp.regressions),
        "displacement": _rows(displacement.sort("mode", "setting")),
        "drift": _rows(cmp.drift),
    }


def build_summary(content: ReportContent) -> dict[str, Any]:
    """The summary as a JSON-ready dict (see the module docstring)."""
    ev = content.ev
    settings = [
        {
            "mode": h.mode,
            "setting": row["setting"],
            "cutoff": row["cutoff"],
            "unit": h.unit,
            "n_queries": row["n_queries"],
            "measures": dict(row["values"]),
        }
        for h in content.headlines
        for row in h.rows
    ]
    best = [
        {
            "mode": h.mode,
            "unit": h.unit,
            "best": {
                m: {
                    "setting": setting,
                    "value": next(r["values"][m] for r in h.rows if r["setting"] == setting),
                }
                for m, setting in h.best.items()
            },
        }
        for h in content.headlines
    ]
    overlap = (
        ev.overlap.group_by("mode_a", "setting_a", "mode_b", "setting_b")
        .agg(pl.col("jaccard").mean(), pl.col("rbo").mean(), pl.len().alias("queries"))
        .sort("mode_a", "mode_b", "setting_a", "setting_b")
    )
    summary: dict[str, Any] = {
        "format": 1,
        "run": content.run,
        "generated_at": content.generated_at,
        "measures": list(ev.measures),
        "primary_measure": content.primary,
        "queries": {
            "total": ev.queries.height,
            "judged": int(ev.queries["judged"].sum()),
        },
        "settings": settings,
        "best": best,
        "operating_points": _rows(ev.operating_points),
        "sweep": _rows(ev.sweep),
        "threshold_check": _rows(ev.threshold_check),
        "unjudged": {
            "hits": int(ev.unjudged["n_unjudged"].sum()),
            "queries_without_judgments": int((~ev.queries["judged"]).sum()),
        },
        "overlap": _rows(overlap),
    }
    if content.extras:
        summary["extras"] = {section.key: dict(section.summary) for section in content.extras}
    if content.quality is not None:
        from runner.report.sections.render import quality_summary

        summary.update(quality_summary(content.quality))
    verdict = content.api_verdict()
    summary["api_contract"] = {
        "changed": verdict is not None and verdict[0] == "changed",
        "findings": [f.to_dict() for f in content.api_contract],
    }
    comparison = _comparison(content)
    if comparison is not None:
        summary["comparison"] = comparison
    if content.gates:
        failed = {str(f.gate) for f in content.failures}
        summary["gates"] = [
            {
                "gate": str(g),
                "failed": str(g) in failed,
                "failures": [
                    _clean(
                        {
                            "mode": f.mode,
                            "setting": f.setting,
                            "unit": f.unit,
                            "delta": f.delta,
                            "p_holm": f.p_holm,
                        }
                    )
                    for f in content.failures
                    if f.gate == g
                ],
            }
            for g in content.gates
        ]
    return _clean(summary)  # type: ignore[no-any-return]


def dumps(summary: dict[str, Any]) -> str:
    """Pretty JSON, strict (no NaN)."""
    return json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
