"""What a run records of its suite: the content hash, and every judgment as a table.

`suite_hash` says what is asked and how it is judged (queries, modes, sweep, defaults, pages,
dataset, judgments), not how fast or where: rate limit, concurrency, retries, auth and base_url
do not change it.

suite_hash(suite)        # 16 hex digits; the same suite gives the same hash on any machine
judgments_table(suite)   # JUDGMENTS_SCHEMA rows, copied into the run directory
"""

from __future__ import annotations

import hashlib

import orjson
import pyarrow as pa

from runner.schema import JUDGMENTS_SCHEMA
from runner.suite.models import Suite

__all__ = ["judgments_table", "suite_hash"]


def suite_hash(suite: Suite) -> str:
    """16 hex digits over what the suite asks and how it is judged; stable across machines.

    Independent of key order, of query order and of where the files lie; the rate limit,
    concurrency, retries, timeouts, auth and base_url are not part of it.
    """
    content = {
        "version": 1,
        "name": suite.name,
        "dataset_id": suite.dataset_id,
        "defaults": suite.defaults.model_dump(),
        "pagination": suite.pagination.model_dump(),
        "modes": {name: mode.model_dump() for name, mode in suite.modes.items()},
        "sweep": suite.sweep.model_dump(),
        # An anchor joins a query's entry only when it has one: older hashes stay as they were.
        "queries": sorted(
            [q.id, q.text, list(q.labels or ())] + ([q.anchor] if q.anchor else [])
            for q in suite.queries
        ),
        "judgments": sorted([j.query_id, j.kind, j.value, j.grade] for j in suite.judgments_rows),
    }
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def judgments_table(suite: Suite) -> pa.Table:
    """Every judgment of the suite as a table in `JUDGMENTS_SCHEMA` (the run copies it in)."""
    rows = suite.judgments_rows
    columns = {
        "query_id": [j.query_id for j in rows],
        "kind": [j.kind for j in rows],
        "value": [j.value for j in rows],
        "grade": [j.grade for j in rows],
        "source": [j.source for j in rows],
    }
    return pa.Table.from_pydict(columns, schema=JUDGMENTS_SCHEMA)
