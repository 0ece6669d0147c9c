"""What a run of a plan will cost, before it starts: counts, settings, pages, duration."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from runner.plan.expand import Plan, setting_grid
from runner.suite import Suite
from runner.suite.fields import MAX_PAGES

__all__ = ["PlanSummary", "SettingCount", "summarise"]


@dataclass(frozen=True, slots=True)
class SettingCount:
    """How many unique requests one (mode, setting) sends."""

    mode: str
    setting: str
    requests: int


@dataclass(frozen=True, slots=True)
class PlanSummary:
    """What a run of a plan will cost, before it starts.

    `n_requests` counts unique wire requests (first pages); `n_specs` the (query, mode, setting)
    rows they answer. `max_pages_total` is n_requests × max_pages, where "all" is the client's
    cap of `MAX_PAGES` pages a request. `rate_limit` is the suite's, divided by N for a shard
    k/N (the executor paces a shard so, letting N shards run at once). `min_duration_s` =
    n_requests / rate_limit (every request is at least a page); `max_duration_s` =
    max_pages_total / rate_limit (retries add to both; 0 when the rate is unlimited).
    """

    suite_name: str
    shard: str | None
    n_queries: int
    n_modes: int
    n_specs: int
    n_requests: int
    n_shared: int
    per_setting: tuple[SettingCount, ...]
    max_pages: int | Literal["all"]
    max_pages_total: int | None
    rate_limit: float
    concurrency: int
    min_duration_s: float
    max_duration_s: float | None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (`vlbench plan --json`)."""
        out = {name: getattr(self, name) for name in self.__slots__}
        out["per_setting"] = [
            {"mode": c.mode, "setting": c.setting, "requests": c.requests} for c in self.per_setting
        ]
        return out

    def render(self) -> str:
        """A few aligned lines for a terminal."""
        title = self.suite_name + (f" (shard {self.shard})" if self.shard else "")
        pages = f"at most {self.max_pages_total} (max_pages {self.max_pages}" + (
            f": until a short page, {MAX_PAGES} a request at most)"
            if self.max_pages == "all"
            else ")"
        )
        longest = (
            "" if self.max_duration_s is None else f", at most {_duration(self.max_duration_s)}"
        )
        lines = [
            f"suite {title}",
            f"  queries    {self.n_queries}",
            f"  modes      {self.n_modes}",
            f"  requests   {self.n_requests} unique"
            + (f" ({self.n_shared} more shared with identical queries)" if self.n_shared else ""),
            f"  pages      {pages}",
            f"  duration   at least {_duration(self.min_duration_s)}{longest}"
            + (
                f" at {self.rate_limit:g} requests/s"
                if math.isfinite(self.rate_limit)
                else " (no rate limit)"
            ),
            "  settings   mode, setting: requests",
        ]
        width = max((len(c.mode) for c in self.per_setting), default=0)
        set_width = max((len(c.setting) for c in self.per_setting), default=0)
        lines += [
            f"    {c.mode:<{width}}  {c.setting + ':':<{set_width + 1}}  {c.requests}"
            for c in self.per_setting
        ]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def summarise(plan: Plan, suite: Suite) -> PlanSummary:
    """Counts, settings, pages and the time the rate limit implies for a plan of `suite`."""
    # A shard runs at rate_limit / N, so that N shards running at once keep to the limit.
    rate = suite.rate_limit / (plan.shard[1] if plan.shard else 1)
    counts = Counter((r.mode, r.setting) for r in plan.requests)
    # Every setting of the suite, in suite order, even one a shard holds none of.
    per_setting = tuple(
        SettingCount(name, setting, counts[(name, setting)])
        for name, mode in suite.modes.items()
        for setting, _, _ in setting_grid(mode, suite)
    )
    max_pages = suite.pagination.max_pages
    # "all" stops at the first short page, and at the client's cap at the latest.
    total = len(plan.requests) * (MAX_PAGES if max_pages == "all" else max_pages)
    return PlanSummary(
        suite_name=suite.name,
        shard=plan.shard_label,
        n_queries=len({spec.query_id for spec in plan.specs}),
        n_modes=len({spec.mode for spec in plan.specs}),
        n_specs=len(plan.specs),
        n_requests=len(plan.requests),
        n_shared=len(plan.specs) - len(plan.requests),
        per_setting=per_setting,
        max_pages=max_pages,
        max_pages_total=total,
        rate_limit=rate,
        concurrency=suite.concurrency,
        min_duration_s=len(plan.requests) / rate,
        max_duration_s=total / rate,
    )
