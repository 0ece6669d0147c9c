"""A suite expanded into the requests a run sends: queries × modes × settings, each keyed stably.

    plan = expand(load_suite("queries/demo.yaml"))
    for request in plan.requests:          # unique wire requests: send each once
        params = request.params()          # + page_number, added by the executor
        for spec in request.specs:         # every (query id, mode, setting) it answers
            ...

The rooms: `spec` (a request: `RequestSpec`, `WireRequest`, its query string and keys),
`columns` (a plan held as a few numbers a spec), `expand` (suite → `Plan`, shards) and
`summary` (what a plan will cost). Keys are the same for the same suite on any machine,
whatever the order of keys in the YAML.
"""

from runner.plan.expand import EMBEDDED_DATASET, Plan, expand, parse_shard, shard
from runner.plan.spec import RequestSpec, WireRequest, wire_params
from runner.plan.summary import PlanSummary, SettingCount, summarise

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
