"""A suite expanded into the requests a run sends, and a plan split into shards.

A setting is one point of a mode's grid: caption modes × `sweep.textual_similarity_threshold`,
semantic modes × `sweep.semantic_threshold`, fts and anchor modes one setting; each ×
`sweep.granularity` (or `defaults.granularity`). A mode whose list is empty sends no cut-off
(setting `default`). A text mode asks the queries that give a text; an anchor mode (visual
search) those that give an anchor.
Setting labels depend on the request alone: "tst=0.5", "st=0.7", "default", with " g=2" added
for a granularity other than 0 ("tst=0.5 g=2", "g=2"). `shard(plan, k, n)` splits by wire key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from runner.errors import UsageError
from runner.plan.columns import MakeSpec, PlanColumns, RequestView, SpecView
from runner.plan.spec import RequestSpec, WireRequest, spec_keys, wire_params
from runner.suite import Mode, Query, Suite

__all__ = ["EMBEDDED_DATASET", "Plan", "expand", "parse_shard", "setting_grid", "shard"]

# The key namespace of a suite that names no dataset (the embedded server's demo dataset).
EMBEDDED_DATASET: Final = "embedded"
_SETTING_PREFIX: Final = {"caption": "tst", "semantic": "st"}


@dataclass(frozen=True, slots=True)
class Plan:
    """Every spec of a suite (or of one shard of it) and the unique wire requests behind them.

    Iterating a plan, or `len(plan)`, goes over the specs; `requests` is what to send.
    `dataset_id` is the key namespace: the suite's dataset, or "embedded". An expanded plan's
    `specs` and `requests` are read-only sequences that build each spec when it is read (a few
    numbers a spec are held, see `runner.plan.columns`); a plan can also be made of tuples.
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


def setting_grid(mode: Mode, suite: Suite) -> list[tuple[str, float | None, int]]:
    """(setting label, cut-off or None, granularity) for every setting of a mode, in sweep order.

    The one place a setting's label is made; `summarise` lists a suite's settings through it.
    """
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
        for label, cutoff, granularity in setting_grid(mode, suite)
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
        wire_key, key = spec_keys(dataset, params, query.id)
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
