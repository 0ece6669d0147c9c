"""A suite expanded into the requests a run sends: queries × modes × settings, each keyed stably.

    plan = expand(load_suite("queries/demo.yaml"))
    for request in plan.requests:          # unique wire requests: send each once
        params = request.params()          # + page_number, added by the executor
        for spec in request.specs:         # every (query id, mode, setting) it answers
            ...

A setting is one point of a mode's grid: caption modes × `sweep.textual_similarity_threshold`,
semantic modes × `sweep.semantic_threshold`, fts and anchor modes one setting; each ×
`sweep.granularity` (or `defaults.granularity`). A mode whose list is empty sends no cut-off
(setting `default`). A text mode asks the queries that give a text; an anchor mode (visual
search) those that give an anchor.
Setting labels depend on the request alone: "tst=0.5", "st=0.7", "default", with " g=2" added
for a granularity other than 0 ("tst=0.5 g=2", "g=2").

Keys: `RequestSpec.wire_key` is a hash of the dataset and the exact query-string parameters, so
two queries with the same text and filters share one wire request; `RequestSpec.key` adds the
query id, so evaluation rows stay per query. Both are the same for the same suite on any machine,
whatever the order of keys in the YAML. `shard(plan, k, n)` splits by wire key.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import orjson

from runner._plan_columns import MakeSpec, PlanColumns, RequestView, SpecView
from runner.errors import UsageError
from runner.suite import Mode, Query, Suite
from runner.suite.fields import MAX_PAGES

__all__ = [
    "EMBEDDED_DATASET",
    "Plan",
    "PlanSummary",
    "RequestSpec",
    "SettingCount",
    "WireRequest",
    "expand",
    "parse_shard",
    "shard",
    "summarise",
    "wire_params",
]

# The key namespace of a suite that names no dataset (the embedded server's demo dataset).
EMBEDDED_DATASET: Final = "embedded"
_KEY_VERSION: Final = "vlbench-plan-v1"
_SETTING_PREFIX: Final = {"caption": "tst", "semantic": "st"}


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join((_KEY_VERSION, *parts)).encode()).hexdigest()[:16]


def wire_params(
    text: str,
    op: Literal["fts", "semantic"] | None,
    entity_type: str,
    granularity: int,
    cutoff: float | None,
    labels: tuple[str, ...] | None,
    anchor: str | None = None,
) -> dict[str, str]:
    """The query string of a search: `anchor_media_id=` when there is an anchor (visual search),
    `caption=` when op is None, else a VQL text filter."""
    params = {"entity_type": entity_type, "threshold": str(granularity)}
    if anchor is not None:
        params["anchor_media_id"] = anchor
        params["anchor_type"] = "MEDIA"
        if labels:
            params["labels"] = _json(list(labels))
        return params
    if op is None:
        params["caption"] = text
        if cutoff is not None:
            params["textual_similarity_threshold"] = repr(cutoff)
        if labels:
            params["labels"] = _json(list(labels))
        return params
    text_filter: dict[str, object] = {"op": op, "value": text}
    if cutoff is not None and op == "semantic":
        text_filter["threshold"] = cutoff
    vql: list[dict[str, object]] = [{"text": text_filter}]
    if labels:
        vql.append({"labels": {"op": "one_of", "value": list(labels)}})
    params["vql"] = _json(vql)
    return params


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One query asked in one mode at one setting; what a row of requests/hits is keyed by.

    `threshold` is the clustering granularity (the API's name); `cutoff` is the score cut-off
    in the mode's own terms (caption: `textual_similarity_threshold`, semantic:
    `semantic_threshold`, else None). `labels_filter` is sorted, None when the query has none.
    A spec of an anchor mode (`via: anchor`) sends `anchor_media_id`; its `query_text` reads
    `anchor:<media id>`, so that the stored rows say what was asked.
    """

    key: str
    wire_key: str
    query_id: str
    query_text: str
    mode: str
    via: Literal["caption", "vql", "anchor"]
    op: Literal["fts", "semantic"] | None
    setting: str
    entity_type: str
    threshold: int
    textual_similarity_threshold: float | None
    semantic_threshold: float | None
    cutoff: float | None
    labels_filter: tuple[str, ...] | None
    anchor_media_id: str | None = None

    def params(self) -> dict[str, str]:
        """The exact query-string parameters, VQL JSON-encoded (page_number not included)."""
        op = None if self.via == "caption" else self.op
        return wire_params(
            self.query_text,
            op,
            self.entity_type,
            self.threshold,
            self.cutoff,
            self.labels_filter,
            self.anchor_media_id,
        )


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One unique request on the wire and every spec (query id) that shares it, in plan order."""

    wire_key: str
    specs: tuple[RequestSpec, ...]

    @property
    def mode(self) -> str:
        return self.specs[0].mode

    @property
    def setting(self) -> str:
        return self.specs[0].setting

    @property
    def query_ids(self) -> tuple[str, ...]:
        return tuple(spec.query_id for spec in self.specs)

    def params(self) -> dict[str, str]:
        """The query-string parameters (the same for every spec sharing this request)."""
        return self.specs[0].params()


@dataclass(frozen=True, slots=True)
class Plan:
    """Every spec of a suite (or of one shard of it) and the unique wire requests behind them.

    Iterating a plan, or `len(plan)`, goes over the specs; `requests` is what to send.
    `dataset_id` is the key namespace: the suite's dataset, or "embedded". An expanded plan's
    `specs` and `requests` are read-only sequences that build each spec when it is read (a few
    numbers a spec are held, see `runner._plan_columns`); a plan can also be made of tuples.
    """

    dataset_id: str
    specs: Sequence[RequestSpec]
    requests: Sequence[WireRequest]
    shard: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self) -> Iterator[RequestSpec]:
        return iter(self.specs)

    @property
    def shard_label(self) -> str | None:
        """The shard as "k/N", None for a whole plan."""
        return None if self.shard is None else f"{self.shard[0]}/{self.shard[1]}"


def _grid(mode: Mode, suite: Suite) -> list[tuple[str, float | None, int]]:
    """(setting label, cut-off or None, granularity) for every setting of a mode."""
    cutoffs: tuple[float | None, ...] = (None,)
    if mode.kind == "caption" and suite.sweep.textual_similarity_threshold:
        cutoffs = suite.sweep.textual_similarity_threshold
    elif mode.kind == "semantic" and suite.sweep.semantic_threshold:
        cutoffs = suite.sweep.semantic_threshold
    granularities = suite.sweep.granularity or (suite.defaults.granularity,)
    grid = []
    for cutoff in cutoffs:
        for granularity in granularities:
            parts = [] if cutoff is None else [f"{_SETTING_PREFIX[mode.kind]}={cutoff!r}"]
            if granularity:  # a label is a function of the request alone: g=0 goes unsaid
                parts.append(f"g={granularity}")
            grid.append((" ".join(parts) or "default", cutoff, granularity))
    return grid


@dataclass(frozen=True, slots=True)
class _Setting:
    """One point of a mode's grid, as every spec at it shares it."""

    mode: str
    via: Literal["caption", "vql", "anchor"]
    op: Literal["fts", "semantic"] | None
    kind: str
    sends: str  # "text" or "anchor": what of a query the mode sends
    label: str
    cutoff: float | None
    granularity: int


def _settings(suite: Suite) -> list[_Setting]:
    """Every (mode, setting) of the suite, modes in suite order, each mode's grid in sweep order."""
    return [
        _Setting(name, mode.via, mode.op, mode.kind, mode.sends, label, cutoff, granularity)
        for name, mode in suite.modes.items()
        for label, cutoff, granularity in _grid(mode, suite)
    ]


def _spec(
    query: Query,
    at: _Setting,
    dataset: str,
    entity_type: str,
    keys: tuple[int, int] | None = None,
) -> RequestSpec:
    """The spec of one query at one setting: the one place a spec and its keys are made.

    `keys` (wire key, key) as numbers, when known already, spare the hashing.
    """
    labels = tuple(sorted(set(query.labels))) if query.labels else None
    anchor = query.anchor if at.sends == "anchor" else None
    text = f"anchor:{anchor}" if anchor is not None else query.text or ""
    if keys is None:
        op = None if at.via == "caption" else at.op
        params = wire_params(text, op, entity_type, at.granularity, at.cutoff, labels, anchor)
        canonical = orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()
        wire_key = _digest(dataset, canonical)
        key = _digest(wire_key, query.id)
    else:
        wire_key, key = f"{keys[0]:016x}", f"{keys[1]:016x}"
    return RequestSpec(
        key=key,
        wire_key=wire_key,
        query_id=query.id,
        query_text=text,
        mode=at.mode,
        via=at.via,
        op=at.op,
        setting=at.label,
        entity_type=entity_type,
        threshold=at.granularity,
        textual_similarity_threshold=at.cutoff if at.kind == "caption" else None,
        semantic_threshold=at.cutoff if at.kind == "semantic" else None,
        cutoff=at.cutoff,
        labels_filter=labels,
        anchor_media_id=anchor,
    )


def _asks(query: Query, at: _Setting) -> bool:
    """Whether a mode asks this query: it gives what the mode sends (text, or an anchor)."""
    return (query.anchor if at.sends == "anchor" else query.text) is not None


def _made(
    queries: Sequence[Query], settings: Sequence[_Setting], dataset: str, entity_type: str
) -> MakeSpec:
    """`make(query index, setting index)`: the spec again, for a plan's views (see `_spec`)."""

    def make(q: int, s: int, keys: tuple[int, int], /) -> RequestSpec:
        return _spec(queries[q], settings[s], dataset, entity_type, keys)

    return make


def expand(suite: Suite) -> Plan:
    """Every (query, mode, setting) of a suite as a `RequestSpec`, grouped into wire requests.

    Order: queries as in the suite, then modes, then each mode's settings in sweep order.
    Count: Σ_modes (queries the mode asks) × (cut-offs of the mode, or 1) × (granularities, or 1).
    The plan holds a few numbers a spec; its `specs` and `requests` build them when read.
    """
    dataset = suite.dataset_id or EMBEDDED_DATASET
    entity_type = suite.defaults.entity_type
    settings = _settings(suite)
    queries, at, wires, keys = [], [], [], []
    for q, query in enumerate(suite.queries):
        for s, setting in enumerate(settings):
            if not _asks(query, setting):
                continue
            spec = _spec(query, setting, dataset, entity_type)
            queries.append(q)
            at.append(s)
            wires.append(int(spec.wire_key, 16))
            keys.append(int(spec.key, 16))
    columns = PlanColumns(
        _made(suite.queries, settings, dataset, entity_type),
        np.array(queries, np.int32),
        np.array(at, np.int32),
        np.array(wires, np.uint64),
        np.array(keys, np.uint64),
    )
    return Plan(dataset, SpecView(columns), RequestView(columns))


def parse_shard(text: str) -> tuple[int, int]:
    """Parse "2/4" into (2, 4); raise `UsageError` unless it is k/N with 1 <= k <= N."""
    k, slash, n = text.partition("/")
    if not (slash and k.strip().isdigit() and n.strip().isdigit()):
        raise UsageError(f"--shard {text!r}: write k/N, e.g. 1/4")
    return _checked(int(k), int(n))


def _checked(k: int, n: int) -> tuple[int, int]:
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"shard {k}/{n}: k must be within 1..{max(n, 1)}")
    return k, n


def shard(plan: Plan, k: int, n: int) -> Plan:
    """The k-th of n disjoint parts of a plan (k in 1..n), split by wire key.

    The n shards cover the plan exactly, and a wire request and all its specs stay together.
    The same plan gives the same shards on every machine.
    """
    _checked(k, n)
    if plan.shard is not None:
        raise UsageError(f"the plan is already shard {plan.shard_label}")
    if isinstance(plan.specs, SpecView):  # an expanded plan: select by numbers, build nothing
        columns = plan.specs.columns
        part = columns.subset(columns.wire % np.uint64(n) == np.uint64(k - 1))
        return Plan(plan.dataset_id, SpecView(part), RequestView(part), (k, n))
    keep = tuple(r for r in plan.requests if int(r.wire_key, 16) % n == k - 1)
    keys = {r.wire_key for r in keep}
    specs = tuple(spec for spec in plan.specs if spec.wire_key in keys)
    return Plan(plan.dataset_id, specs, keep, (k, n))


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
        for setting, _, _ in _grid(mode, suite)
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
